"""The command line: ``rmsprop demo | bench | presets | explain | diff`` (also ``python -m rmsprop``)."""
