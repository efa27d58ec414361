"""aes-index: aesthetic scores and star ratings for photo libraries, from CLIP.

Importing the package is cheap on purpose (no torch): decode workers and the CLI's
argument parsing import it without paying for the model stack.
"""

__version__ = "0.1.0"
