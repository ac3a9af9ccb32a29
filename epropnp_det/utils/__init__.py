"""Small utilities shared by the tools and the models (never imported by ops/)."""
