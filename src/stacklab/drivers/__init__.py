"""One module per resource kind. Drivers do I/O only through what the DriverContext gives them."""
