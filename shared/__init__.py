"""The product package: request/event contract, platform policy, reset workflow and its adapters.

Nothing below this package imports `azure.functions`; `function_app.py` is the only entrypoint layer.
"""
