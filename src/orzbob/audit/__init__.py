"""The audit log of money-relevant staff and admin actions."""
