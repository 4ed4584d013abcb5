"""Offline test of the two inline custom-resource Lambdas in buttonparty.yaml.

The code is taken out of the template and run against stand-ins for boto3 and
cfnresponse, so a typo or a wrong branch shows up here instead of as a stack
stuck in CREATE_IN_PROGRESS. Run by scripts/check-deploy with the cfn-lint
venv's Python (which has PyYAML):  python deploy/aws/test_custom_resources.py
"""

import json
import sys
import types
from pathlib import Path

import yaml

TEMPLATE = Path(__file__).with_name("buttonparty.yaml")
SECRETS = {"arn:app": ("buttonparty_app", "appS3cret"), "arn:ro": ("buttonparty_ro", "s3cretPW")}


class _AnyTag(yaml.SafeLoader):
    pass


_AnyTag.add_multi_constructor("!", lambda loader, suffix, node: None)


def inline_code(resource):
    doc = yaml.load(TEMPLATE.read_text(), Loader=_AnyTag)
    return doc["Resources"][resource]["Properties"]["Code"]["ZipFile"]


class Recorder:
    """Stands in for boto3 clients and cfnresponse; records every call."""

    def __init__(self, fail_on=()):
        self.calls = []
        self.fail_on = set(fail_on)
        self.responses = []

    def client(self, service):
        rec = self

        class Client:
            def __getattr__(self, name):
                def call(**kw):
                    rec.calls.append((service, name, kw))
                    if name in rec.fail_on:
                        raise RuntimeError(f"{name} failed for {kw.get('sql', '')}")
                    if name == "create_platform_application":
                        return {"PlatformApplicationArn": "arn:aws:sns:r:1:app/GCM/" + kw["Name"]}
                    if name == "get_secret_value":
                        user, pw = SECRETS[kw["SecretId"]]
                        return {"SecretString": json.dumps({"username": user, "password": pw, "host": "h"})}
                    return {}
                return call

        return Client()

    def module(self):
        boto3 = types.ModuleType("boto3")
        boto3.client = self.client
        cfn = types.ModuleType("cfnresponse")
        cfn.SUCCESS, cfn.FAILED = "SUCCESS", "FAILED"

        def send(event, context, status, data, physical_id=None, noEcho=False, reason=None):
            self.responses.append((status, data, physical_id, reason))

        cfn.send = send
        return boto3, cfn


def load(resource, rec):
    boto3, cfn = rec.module()
    sys.modules["boto3"], sys.modules["cfnresponse"] = boto3, cfn
    ns = {}
    exec(compile(inline_code(resource), resource, "exec"), ns)  # noqa: S102 - our own template
    ns["time"] = types.SimpleNamespace(sleep=lambda s: None)
    return ns


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def test_platform_application():
    props = {"Name": "bp-fcm", "Credential": "{\"type\": \"service_account\"}"}
    rec = Recorder()
    h = load("PlatformApplicationFunction", rec)["handler"]
    h({"RequestType": "Create", "ResourceProperties": props}, None)
    check(rec.calls[0][1] == "create_platform_application", rec.calls)
    check(rec.calls[0][2]["Platform"] == "GCM", rec.calls)
    arn = "arn:aws:sns:r:1:app/GCM/bp-fcm"
    check(rec.responses[-1] == ("SUCCESS", {"Arn": arn}, arn, None), rec.responses)

    # new credential, same name: updated in place
    h({"RequestType": "Update", "PhysicalResourceId": arn, "ResourceProperties": dict(props, Credential="x"),
       "OldResourceProperties": props}, None)
    check(rec.calls[-1][1] == "set_platform_application_attributes", rec.calls)
    check(rec.responses[-1][2] == arn, rec.responses)

    # new name: a new application (CloudFormation then deletes the old one)
    h({"RequestType": "Update", "PhysicalResourceId": arn, "ResourceProperties": dict(props, Name="bp2-fcm"),
       "OldResourceProperties": props}, None)
    check(rec.calls[-1][1] == "create_platform_application", rec.calls)
    check(rec.responses[-1][2].endswith("/bp2-fcm"), rec.responses)

    h({"RequestType": "Delete", "PhysicalResourceId": arn, "ResourceProperties": props}, None)
    check(rec.calls[-1][1] == "delete_platform_application", rec.calls)
    check(rec.responses[-1][0] == "SUCCESS", rec.responses)

    # a failed create must answer FAILED (not hang) and not leak the credential
    rec = Recorder(fail_on={"create_platform_application"})
    load("PlatformApplicationFunction", rec)["handler"]({"RequestType": "Create", "ResourceProperties": props}, None)
    status, _, _, reason = rec.responses[-1]
    check(status == "FAILED" and "service_account" not in reason, rec.responses)


def test_db_users():
    props = {"ClusterArn": "arn:c", "MasterSecretArn": "arn:o", "AppSecretArn": "arn:app",
             "ReadOnlySecretArn": "arn:ro", "DatabaseName": "buttonparty", "ReadOnlyMaxUserConnections": "600"}
    rec = Recorder()
    h = load("DbUsersFunction", rec)["handler"]
    h({"RequestType": "Create", "ResourceProperties": props}, None)
    names = [name for svc, name, kw in rec.calls if svc == "rds"]
    # The Data API is switched on for the statements and off again.
    check(names == ["enable_http_endpoint", "disable_http_endpoint"], names)
    first_sql = next(i for i, c in enumerate(rec.calls) if c[1] == "execute_statement")
    check(rec.calls.index(next(c for c in rec.calls if c[1] == "enable_http_endpoint")) < first_sql, rec.calls)
    check(rec.calls[-1][1] == "disable_http_endpoint", rec.calls)
    sqls = [kw["sql"] for svc, name, kw in rec.calls if name == "execute_statement"]
    check(len(sqls) == 6, sqls)
    check(sqls[0] == "CREATE USER IF NOT EXISTS 'buttonparty_app'@'%' IDENTIFIED BY 'appS3cret' REQUIRE SSL", sqls)
    check(sqls[1].startswith("CREATE USER IF NOT EXISTS 'buttonparty_ro'@'%'"), sqls)
    # The application user: every privilege on its schema, nothing global.
    check("GRANT ALL PRIVILEGES ON `buttonparty`.* TO 'buttonparty_app'@'%'" in sqls, sqls)
    check(not any(" ON *.*" in q for q in sqls), sqls)
    # The read-only user: SELECT, TLS and a connection limit.
    check(any(q.startswith("ALTER USER 'buttonparty_ro'@'%'") and q.endswith("REQUIRE SSL WITH MAX_USER_CONNECTIONS 600")
              for q in sqls), sqls)
    check("GRANT SELECT ON `buttonparty`.* TO 'buttonparty_ro'@'%'" in sqls, sqls)
    check(all(kw["secretArn"] == "arn:o" for s, n, kw in rec.calls if n == "execute_statement"), rec.calls)
    check(rec.responses[-1][0] == "SUCCESS", rec.responses)

    rec = Recorder()
    load("DbUsersFunction", rec)["handler"]({"RequestType": "Delete", "ResourceProperties": props}, None)
    check(rec.calls == [] and rec.responses[-1][0] == "SUCCESS", (rec.calls, rec.responses))

    # every retry failing: FAILED, with both passwords masked, and the Data API still switched off
    rec = Recorder(fail_on={"execute_statement"})
    load("DbUsersFunction", rec)["handler"]({"RequestType": "Create", "ResourceProperties": props}, None)
    status, _, _, reason = rec.responses[-1]
    check(status == "FAILED" and "appS3cret" not in reason and "***" in reason, rec.responses)
    check(sum(1 for c in rec.calls if c[1] == "execute_statement") == 18, "retries")
    check(rec.calls[-1][1] == "disable_http_endpoint", rec.calls)


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith("test_"):
            fn()
            print(f"ok {name}")
