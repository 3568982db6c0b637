"""medlite's version, on the ground floor so that every stage (and the cart) can state it."""

__version__ = "0.1.0"
