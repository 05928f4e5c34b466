"""Stand-ins for the outside systems workers talk to: development and test tools, never runtime code.

`make run`, the tests and the benchmarks start them on 127.0.0.1. `ec2.Ec2Simulator` is moto's EC2/S3
server behind a fault-injecting proxy; `cml.CmlSimulator` is a stateful CML controller (the `/api/v0`
REST API that virl2-client uses). moto comes from the `dev` extra of pyproject.toml; no module under
`apps/` or `labmanager/` imports this package, and the production image leaves it out.
"""
