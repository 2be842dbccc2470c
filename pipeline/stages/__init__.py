"""The stages (DESIGN §1): one module per stage holding its spec and shard function, the runner and
executors that run them, the registry that names them, and `build`. Nothing outside this package
imports a stage module; other code reaches the stages through `registry` and `build`."""
