"""Where records live and which batch row reads which: canonical partitions, placement over devices and processes, the batch gather."""
