#!/usr/bin/env python3
"""Check the CloudTrail allocation-failure rule of infra/template.yaml against
the sample events in samplecli-events/, in moto's EventBridge.

Every samplecli-events/cloudtrail-*.json must match the rule; nothing in
samplecli-events/negative/, no alarm, scheduled or manual sample and no
malformed input may match.

Two checks per sample, both in-process (moto's decorator mode, no server, no
network, fake credentials):

* end to end, for samples that are EventBridge envelopes: the rule is created
  with events.put_rule using the EventPattern taken from the template, an SQS
  queue is its target, the sample goes in through events.put_events (source,
  detail-type, detail, resources, time) and the test looks at whether it came
  out of the queue. That exercises the pattern exactly as EventBridge stores it.
* with moto's pattern matcher (moto.events.models.EventPattern), for every
  sample that is a JSON object, on the whole event as written. Inputs that never
  travel through EventBridge (direct alarm actions, SNS records, manual
  invocations) are covered this way. moto does not implement
  events.test_event_pattern (NotImplementedError), hence the matcher.

moto implements the two content filters the pattern uses, `$or` and
`wildcard`, and so does EventBridge. Usage:

    python scripts/test_event_pattern.py [--template infra/template.yaml]

Prints one line per sample and `event-pattern: N passed, M failed`; exits 1 on
any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RULE_LOGICAL_ID = "AllocationFailureRule"
REGION = "us-west-2"

# No real AWS, ever: moto intercepts every call in-process, and these fake
# credentials make sure nothing could authenticate if something slipped past.
for _key, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}.items():
    os.environ[_key] = _value
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_ENDPOINT_URL", None)

import boto3  # noqa: E402
from moto import mock_aws  # noqa: E402
from moto.events.models import EventPattern  # noqa: E402


def load_template(path: Path) -> dict[str, Any]:
    """Parse a CloudFormation/SAM YAML template, intrinsic tags included."""
    from cfnlint.decode import decode  # ships a loader for !Ref, !Sub, !GetAtt, ...

    template, matches = decode(str(path))
    if matches or template is None:
        raise SystemExit(f"cannot parse {path}: {[str(m) for m in matches]}")
    return template


def rule_pattern(template: dict[str, Any]) -> dict[str, Any]:
    rule = template["Resources"][RULE_LOGICAL_ID]
    if rule["Type"] != "AWS::Events::Rule":
        raise SystemExit(f"{RULE_LOGICAL_ID} is a {rule['Type']}, not an AWS::Events::Rule")
    pattern = rule["Properties"]["EventPattern"]
    text = json.dumps(pattern)
    if any(k in text for k in ('"Ref"', '"Fn::')):
        raise SystemExit(f"{RULE_LOGICAL_ID}.EventPattern uses intrinsic functions; resolve them first")
    return json.loads(text)  # plain dicts/lists/strings, detached from the decoder's node types


def samples() -> list[tuple[Path, bool]]:
    """(path, should_match) for every sample the rule is tested against."""
    events = REPO / "samplecli-events"
    cases: list[tuple[Path, bool]] = []
    for path in sorted(events.glob("*.json")):
        cases.append((path, path.name.startswith("cloudtrail-")))
    for sub in ("negative", "malformed"):
        for path in sorted((events / sub).glob("*.json")):
            cases.append((path, False))
    if not any(expected for _, expected in cases):
        raise SystemExit(f"no samplecli-events/cloudtrail-*.json under {events}")
    return cases


def is_envelope(event: Any) -> bool:
    return (
        isinstance(event, dict)
        and isinstance(event.get("source"), str)
        and isinstance(event.get("detail-type"), str)
        and isinstance(event.get("detail"), dict)
    )


class Bus:
    """The rule, deployed in moto's EventBridge with an SQS queue as target."""

    def __init__(self, pattern: dict[str, Any]) -> None:
        self.events = boto3.client("events", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.queue_url = self.sqs.create_queue(QueueName="headroom-pattern-test")["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        self.events.put_rule(
            Name="headroom-allocation-failures",
            EventPattern=json.dumps(pattern),
            State="ENABLED",
        )
        self.events.put_targets(
            Rule="headroom-allocation-failures",
            Targets=[{"Id": "queue", "Arn": queue_arn}],
        )

    def delivered(self, event: dict[str, Any]) -> bool:
        entry = {
            "Source": event["source"],
            "DetailType": event["detail-type"],
            "Detail": json.dumps(event["detail"]),
            "Resources": event.get("resources", []),
        }
        result = self.events.put_events(Entries=[entry])
        if result.get("FailedEntryCount"):
            raise RuntimeError(f"put_events rejected the event: {result['Entries']}")
        received = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", [])
        for message in received:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        if len(received) > 1:
            raise RuntimeError(f"one event produced {len(received)} deliveries")
        if received:
            body = json.loads(received[0]["Body"])
            if body.get("detail") != event["detail"]:
                raise RuntimeError("the delivered event's detail differs from the sample's")
        return bool(received)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", type=Path, default=REPO / "infra" / "template.yaml")
    args = parser.parse_args()

    pattern = rule_pattern(load_template(args.template))
    matcher = EventPattern.load(json.dumps(pattern))

    passed = failed = 0
    with mock_aws():
        bus = Bus(pattern)
        for path, expected in samples():
            name = path.relative_to(REPO).as_posix()
            want = "match" if expected else "no match"
            try:
                event = json.loads(path.read_text())
                verdicts: dict[str, bool] = {}
                if isinstance(event, dict):
                    verdicts["matcher"] = matcher.matches_event(event)
                if is_envelope(event):
                    verdicts["put_events"] = bus.delivered(event)
                wrong = {how: got for how, got in verdicts.items() if got != expected}
                how = "+".join(verdicts) or "not an event object"
                if wrong:
                    failed += 1
                    got = ", ".join(f"{k}: {'match' if v else 'no match'}" for k, v in wrong.items())
                    print(f"FAIL  {name}: want {want}, got {got}")
                else:
                    passed += 1
                    print(f"ok    {name}: {want} ({how})")
            except Exception as exc:  # a broken sample or harness is a failure, not a crash
                failed += 1
                print(f"FAIL  {name}: {type(exc).__name__}: {exc}")

    print(f"event-pattern: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
