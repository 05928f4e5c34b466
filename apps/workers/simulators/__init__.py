"""Stand-ins for the outside systems workers talk to, for `make run` and the tests.

`cml.CmlSimulator` is a stateful CML controller (the `/api/v0` REST API that
virl2-client uses) on 127.0.0.1. EC2 and S3 are served by moto in server mode.
"""
