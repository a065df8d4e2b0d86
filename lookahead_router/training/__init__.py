"""The training engine shared by every neural router."""
