"""One construct per capability; cdk/stack.py wires them together."""
