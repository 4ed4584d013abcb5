"""LocalStack init hook (ready.d): the ButtonParty dev resources.

Creates what scripts/dev-stack creates, with the same names and attributes
(scripts/dev_stack_resources.py), so the daemons, the dev-stack script and the
demo work against a LocalStack started in Docker (deploy/localstack/
docker-compose.yml mounts this directory on /etc/localstack/init):

  queues   buttonparty-add-user, buttonparty-press, buttonparty-powerup,
           buttonparty-timestamp, each with <name>-dlq (maxReceiveCount 5;
           source: 4 days, DLQ: 14 days; visibility 30 s; 8 KiB messages)
  topic    buttonparty-rounds
  app      buttonparty-fcm (GCM; fake credential: nothing is sent to Google)
  secret   buttonparty/db  (RDS shape; user `buttonparty` on 127.0.0.1:3306)

LocalStack runs a .py hook inside its own Python (boto3 is there), so the same
file works in the Docker image and in host mode (copy or link it into
$FILESYSTEM_ROOT/etc/localstack/init/ready.d/). Idempotent: existing resources
are kept and brought to these attributes, an existing secret is not changed.

Environment (of the LocalStack process / container):
  BUTTONPARTY_INIT_ENDPOINT    the emulator to create them in (default: this
                               LocalStack; for running the file by hand)
  BUTTONPARTY_DEV_DB_PASSWORD  password put in the secret when it is created
                               (default "buttonparty"; scripts/dev-stack
                               replaces it with its own generated one)
  BUTTONPARTY_INIT_PREFIX      first part of every name (default
                               "buttonparty"; scripts/check-systemd creates a
                               set of its own with another prefix)
  BUTTONPARTY_INIT_DB_USER, BUTTONPARTY_INIT_DB_NAME
                               user and database named in the secret
                               (default "buttonparty" both)
  AWS_DEFAULT_REGION           default us-east-1
"""

import json
import os

import boto3


def _endpoint():
    # An explicit endpoint (scripts/check-deploy runs this file against the dev stack's emulator),
    # else the LocalStack gateway this hook runs in, whatever GATEWAY_LISTEN says.
    explicit = os.environ.get("BUTTONPARTY_INIT_ENDPOINT")
    if explicit:
        return explicit
    try:
        from localstack import config as ls_config

        return ls_config.internal_service_url()
    except Exception:  # not inside LocalStack
        return os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")


ENDPOINT = _endpoint()

REGION = os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
PREFIX = os.environ.get("BUTTONPARTY_INIT_PREFIX") or "buttonparty"
DB_USER = os.environ.get("BUTTONPARTY_INIT_DB_USER") or "buttonparty"
DB_NAME = os.environ.get("BUTTONPARTY_INIT_DB_NAME") or "buttonparty"
QUEUES = [PREFIX + "-add-user", PREFIX + "-press", PREFIX + "-powerup", PREFIX + "-timestamp"]
TOPIC = PREFIX + "-rounds"
PLATFORM_APP = PREFIX + "-fcm"
SECRET_ID = PREFIX + "/db"
COMMON = {"VisibilityTimeout": "30", "MaximumMessageSize": "8192"}
SOURCE_RETENTION = str(4 * 24 * 3600)
DLQ_RETENTION = str(14 * 24 * 3600)
MAX_RECEIVE_COUNT = 5


def _client(name):
    return boto3.client(
        name,
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def _ensure_queue(sqs, name, attributes):
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def _ensure_platform_application(sns):
    suffix = ":app/GCM/" + PLATFORM_APP
    for page in sns.get_paginator("list_platform_applications").paginate():
        for app in page.get("PlatformApplications", []):
            if app["PlatformApplicationArn"].endswith(suffix):
                return app["PlatformApplicationArn"]
    return sns.create_platform_application(
        Name=PLATFORM_APP,
        Platform="GCM",
        # LocalStack requires both attributes and checks neither.
        Attributes={
            "PlatformCredential": "localstack-fake-fcm-credential",
            "PlatformPrincipal": "localstack-fake-principal",
        },
    )["PlatformApplicationArn"]


def _ensure_secret(sm):
    try:
        sm.describe_secret(SecretId=SECRET_ID)
        return
    except sm.exceptions.ResourceNotFoundException:
        pass
    value = {
        "engine": "mysql",
        "username": DB_USER,
        "password": os.environ.get("BUTTONPARTY_DEV_DB_PASSWORD") or "buttonparty",
        "host": "127.0.0.1",
        "port": 3306,
        "dbname": DB_NAME,
    }
    sm.create_secret(
        Name=SECRET_ID,
        Description="ButtonParty dev database credentials (LocalStack init hook)",
        SecretString=json.dumps(value),
    )


def main():
    sqs, sns, sm = _client("sqs"), _client("sns"), _client("secretsmanager")
    created = {}
    for name in QUEUES:
        # DLQs keep the 256 KiB limit: a dead-lettered copy is the body plus reason attributes.
        dlq_url = _ensure_queue(
            sqs, name + "-dlq", dict(COMMON, MaximumMessageSize="262144", MessageRetentionPeriod=DLQ_RETENTION)
        )
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT})
        created[name] = _ensure_queue(
            sqs, name, dict(COMMON, MessageRetentionPeriod=SOURCE_RETENTION, RedrivePolicy=redrive)
        )
    created[TOPIC] = sns.create_topic(Name=TOPIC)["TopicArn"]
    created[PLATFORM_APP] = _ensure_platform_application(sns)
    _ensure_secret(sm)
    created[SECRET_ID] = "secret"
    for key, value in created.items():
        print("buttonparty init: %s -> %s" % (key, value), flush=True)


main()
