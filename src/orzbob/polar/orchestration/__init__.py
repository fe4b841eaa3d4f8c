"""The calls to Polar that sit between transactions: creating a customer, shipping credits,
starting a checkout.

Each reads what it needs in one short transaction and closes it, calls Polar with no
transaction (and no row lock) open, then writes the outcome in a new short transaction. So
these take the session factory or the runtime, never a session; the services they call take a
session and never commit (docs/architecture.md, "Network calls between transactions")."""
