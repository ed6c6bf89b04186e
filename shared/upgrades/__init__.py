"""The rules: the upgrade workflow, tracking an upgrade to its end, and the process-wide runtime that wires them."""
