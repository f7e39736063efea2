"""End-to-end recipes that compose the freelabel library; ``cli.py`` is a thin layer over them."""
