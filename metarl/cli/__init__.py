"""The three command-line programs and their shared plumbing."""
