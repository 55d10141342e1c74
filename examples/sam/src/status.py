"""Answers status requests over the function URL, and writes the nightly report."""

import os


def handler(event, context):
    if isinstance(event, dict) and "report" in event:
        print("nightly report for", os.environ["STAGE"])
        return None
    return {"stage": os.environ["STAGE"], "version": context.function_version}
