"""A small OpenAI-compatible AI component for the quickstart, the tests and the benchmark.

It knows nothing of the gateway. Answers are made up but shaped like OpenAI's, with `usage`.
"""
