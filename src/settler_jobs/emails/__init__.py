"""Email: templates rendered once, sent per recipient through one provider, with a ledger."""
