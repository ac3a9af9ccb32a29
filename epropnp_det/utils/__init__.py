"""Small mm-aware utilities shared by the tools (imported by tools/, never by ops/)."""
