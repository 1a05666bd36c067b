"""Published reference scores, aggregation across run records, and table rendering."""
