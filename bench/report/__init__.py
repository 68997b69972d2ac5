"""Reading records back: comparison tables, reports, plots, regression checks, published numbers."""
