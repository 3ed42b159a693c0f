"""Where files and datasets become examples: one opener per ``DATA=`` form, all converging on
the one example schema (``schema.py``); ``specs.open_source`` is the entry."""
