"""The only room that imports the Azure SDKs, msgraph-sdk, kiota and httpx: the Graph gateway and
its transports and budget, the table ledger, the storage queues, the health probe."""
