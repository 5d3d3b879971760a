"""Analysis: evaluation against baselines, the reference controller, plots, rendering, robustness."""
