"""The Partner Center side: the REST client, tokens, secrets, and the pace of calls."""
