#!/usr/bin/env python3
"""Helper of scripts/dev-stack: HTTP probes and the emulator's AWS resources.

Runs with the LocalStack venv's python (boto3 ships with localstack-core).

    dev_stack_resources.py probe URL    exit 0 if URL answers HTTP at all (any status)
    dev_stack_resources.py health URL   exit 0 if URL/_localstack/health shows sqs, sns and
                                        secretsmanager available; prints the services seen
    dev_stack_resources.py create       create/update the queues, topic, platform application
                                        and DB secret (idempotent); prints `export NAME=value`
                                        lines for the env file on stdout

`create` reads AWS_ENDPOINT_URL (required) and BUTTONPARTY_DEV_DB_PASSWORD (the password of
the MariaDB user `buttonparty`, stored in the secret).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import urllib.error
import urllib.request

REGION = "us-east-1"
QUEUES = {
    # env var name            queue name
    "BUTTONPARTY_ADD_USER_QUEUE_URL": "buttonparty-add-user",
    "BUTTONPARTY_PRESS_QUEUE_URL": "buttonparty-press",
    "BUTTONPARTY_POWERUP_QUEUE_URL": "buttonparty-powerup",
    "BUTTONPARTY_TIMESTAMP_QUEUE_URL": "buttonparty-timestamp",
}
TOPIC_NAME = "buttonparty-rounds"
PLATFORM_APP_NAME = "buttonparty-fcm"
DB_SECRET_ID = "buttonparty/db"
MAX_RECEIVE_COUNT = 5
SOURCE_RETENTION_SECS = 4 * 24 * 3600  # 4 days
DLQ_RETENTION_SECS = 14 * 24 * 3600  # 14 days (the SQS maximum)
VISIBILITY_TIMEOUT_SECS = 30
MAX_MESSAGE_SIZE = 8192
REQUIRED_SERVICES = ("sqs", "sns", "secretsmanager")


def http_get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method="GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:  # an HTTP answer all the same
        return err.code, err.read()


def cmd_probe(url: str) -> int:
    try:
        http_get(url)
    except (OSError, ValueError):
        return 1
    return 0


def cmd_health(base: str) -> int:
    try:
        status, body = http_get(base.rstrip("/") + "/_localstack/health")
    except (OSError, ValueError) as err:
        print(f"no answer: {err}")
        return 1
    if status != 200:
        print(f"HTTP {status}")
        return 1
    try:
        services = json.loads(body).get("services", {})
    except (ValueError, AttributeError):
        print("health answer is not JSON")
        return 1
    seen = {name: services.get(name, "missing") for name in REQUIRED_SERVICES}
    print(" ".join(f"{k}={v}" for k, v in seen.items()))
    return 0 if all(v in ("available", "running") for v in seen.values()) else 1


def clients():
    import boto3  # imported here: probe/health must work without it

    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        sys.exit("AWS_ENDPOINT_URL is not set")
    session = boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION
    )
    return tuple(
        session.client(name, endpoint_url=endpoint, region_name=REGION)
        for name in ("sqs", "sns", "secretsmanager")
    )


def ensure_queue(sqs, name: str, attributes: dict[str, str]) -> str:
    """Create the queue, or bring an existing one's attributes to the wanted values."""
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def ensure_platform_application(sns) -> str:
    suffix = f":app/GCM/{PLATFORM_APP_NAME}"
    for page in sns.get_paginator("list_platform_applications").paginate():
        for app in page.get("PlatformApplications", []):
            if app["PlatformApplicationArn"].endswith(suffix):
                return app["PlatformApplicationArn"]
    return sns.create_platform_application(
        Name=PLATFORM_APP_NAME,
        Platform="GCM",
        # LocalStack wants both; neither is checked. Not a real FCM key.
        Attributes={
            "PlatformCredential": "dev-stack-fake-fcm-server-key",
            "PlatformPrincipal": "dev-stack-fake-principal",
        },
    )["PlatformApplicationArn"]


def ensure_secret(sm, value: str) -> None:
    try:
        current = sm.get_secret_value(SecretId=DB_SECRET_ID).get("SecretString")
    except sm.exceptions.ResourceNotFoundException:
        sm.create_secret(
            Name=DB_SECRET_ID,
            Description="ButtonParty dev database credentials (scripts/dev-stack)",
            SecretString=value,
        )
        return
    if current != value:
        sm.put_secret_value(SecretId=DB_SECRET_ID, SecretString=value)


def cmd_create() -> int:
    password = os.environ.get("BUTTONPARTY_DEV_DB_PASSWORD")
    if not password:
        sys.exit("BUTTONPARTY_DEV_DB_PASSWORD is not set")
    sqs, sns, sm = clients()
    out: dict[str, str] = {}

    common = {
        "VisibilityTimeout": str(VISIBILITY_TIMEOUT_SECS),
        "MaximumMessageSize": str(MAX_MESSAGE_SIZE),
    }
    for env_name, name in QUEUES.items():
        # The dead-letter queue keeps SQS's 256 KiB limit: a malformed message's copy is its
        # body (up to 8 KiB) plus the reason attributes.
        dlq_url = ensure_queue(
            sqs,
            f"{name}-dlq",
            {
                "VisibilityTimeout": str(VISIBILITY_TIMEOUT_SECS),
                "MaximumMessageSize": "262144",
                "MessageRetentionPeriod": str(DLQ_RETENTION_SECS),
            },
        )
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}
        out[env_name] = ensure_queue(
            sqs,
            name,
            {
                **common,
                "MessageRetentionPeriod": str(SOURCE_RETENTION_SECS),
                "RedrivePolicy": json.dumps(redrive),
            },
        )

    out["BUTTONPARTY_TOPIC_ARN"] = sns.create_topic(Name=TOPIC_NAME)["TopicArn"]
    out["BUTTONPARTY_PLATFORM_APPLICATION_ARN"] = ensure_platform_application(sns)

    secret = {
        "engine": "mysql",
        "username": "buttonparty",
        "password": password,
        "host": "127.0.0.1",
        "port": 3306,
        "dbname": "buttonparty",
    }
    ensure_secret(sm, json.dumps(secret))
    out["BUTTONPARTY_DB_SECRET_ID"] = DB_SECRET_ID

    for key, value in out.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "probe":
        return cmd_probe(argv[2])
    if len(argv) == 3 and argv[1] == "health":
        return cmd_health(argv[2])
    if len(argv) == 2 and argv[1] == "create":
        return cmd_create()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
