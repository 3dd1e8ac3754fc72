"""cmultiprocessing: the standard library's multiprocessing API over a native core."""
