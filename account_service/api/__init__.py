"""The HTTP edge: thin routes (parse, call, map errors)."""
