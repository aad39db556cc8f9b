"""Data: the Flowers-102 reader, the synthetic generator, tiny subsets and the input pipelines."""
