"""Worker side: what runs inside Ray (tune driver, per-worker training loop, data, metrics, merge)."""
