"""The dataset card: statistics, the COYO filter funnel and histograms."""
