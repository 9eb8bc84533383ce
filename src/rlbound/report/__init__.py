"""Reports: a self-contained HTML page, results.json and CSV tables."""
