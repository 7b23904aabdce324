"""The host: envelope, dispatch, journal, ledger, completion, events, schedule,
who may ask (access), plugin loading and configuration -- the path of a message."""
