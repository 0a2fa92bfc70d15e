/// PLACEHOLDER: the tar model is being written (see TarReader / TarWriter).
