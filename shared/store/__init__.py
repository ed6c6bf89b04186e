"""The store: the ledger (an Azure Table), the scheduler (queue messages with a delay) and their storage account."""
