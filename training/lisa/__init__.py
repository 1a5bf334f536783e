"""Training LISA (issue 12): the released recipe's losses, metrics, data formats and templates."""
