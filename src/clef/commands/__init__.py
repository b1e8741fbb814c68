"""Stage programs of the `clef` command line: thin assemblies of library parts, one module each."""
