"""Ready-made weights and budgets for exchanges (no exchange SDK is imported)."""
