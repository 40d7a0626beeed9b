"""Checks of infra/template.yaml (and the plain template of a release) that a
linter cannot make, by evaluating the template as CloudFormation would for
given parameters (conditions, Fn::If, Fn::Sub, Fn::Select, ...):

  * A second cluster doesn't break the first. For ClusterNames "a" and then
    "a,b" (and "a,b" then "a,b,c"), under several parameter sets: every
    resource of the smaller stack is still there, and every property whose
    change makes CloudFormation replace the resource (its createOnly
    properties, from the resource schemas cfn-lint ships: LogGroupName,
    AlarmName, DashboardName, the access entry's ClusterName and
    PrincipalArn, a permission's SourceArn, ...) evaluates to the same value.
    A replaced log group loses its logs; a renamed alarm loses its history.
  * IAM no wider than the work: the subnet tag keys, the capacity-alarm
    names one stack may write (never another stack's, even one named
    <stack>-x), and the KMS statement of an encrypted topic.

Run by scripts/lint-infra.sh with the interpreter of .venv-infra (cfn-lint
decodes the short-form YAML tags and provides the schemas). Offline.

  test_template.py TEMPLATE [TEMPLATE ...]
"""

import copy
import fnmatch
import re
import sys

from cfnlint.decode import decode
from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

NO_VALUE = object()
REGION, ACCOUNT = "us-west-2", "123456789012"

# Parameters every check sets, besides ClusterNames (the plain template's
# release parameters have no default).
BASE = {"ArtifactBucketPrefix": "my-org-headroom", "ArtifactPrefix": "headroom/v0"}
KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
PARAMETER_SETS = {
    "defaults": {},
    "every option": {
        "NotificationEmail": "ops@example.com",
        "NotificationKmsKeyArn": KEY_ARN,
        "IpamPoolId": "ipam-pool-0123456789abcdef0",
        "MonitoringSinkArn": f"arn:aws:oam:{REGION}:210987654321:sink/abcd-1234",
        "FunctionSubnetIds": "subnet-1,subnet-2",
        "FunctionSecurityGroupIds": "sg-1",
        "PermissionsBoundaryArn": f"arn:aws:iam::{ACCOUNT}:policy/boundary",
        "ReservedConcurrency": "5",
    },
    "their own topic": {"NotificationTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:ops"},
}
GROWTH = [("a", "a,b"), ("a,b", "a,b,c")]

# Serverless resources have no schema; the names of what they become.
SAM_CREATE_ONLY = {"AWS::Serverless::Function": ["/properties/FunctionName"]}


class Stack:
    """The template as deployed with these parameters under this stack name."""

    def __init__(self, template, parameters, stack_name="headroom"):
        self.template = template
        self.stack_name = stack_name
        self.params = {}
        for name, spec in template.get("Parameters", {}).items():
            value = parameters.get(name, spec.get("Default"))
            if value is None:
                raise SystemExit(f"parameter {name} has no default and no value")
            value = str(value)
            self.params[name] = value.split(",") if spec["Type"] == "CommaDelimitedList" else value
        self.pseudo = {
            "AWS::StackName": stack_name,
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": NO_VALUE,
        }
        self.conditions = {}

    def condition(self, name):
        if name not in self.conditions:
            self.conditions[name] = bool(self.eval(self.template["Conditions"][name]))
        return self.conditions[name]

    def resources(self):
        """Logical id -> the resource with every intrinsic function resolved."""
        return {
            logical: self.eval(resource)
            for logical, resource in self.template["Resources"].items()
            if "Condition" not in resource or self.condition(resource["Condition"])
        }

    def ref(self, name):
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.params:
            return self.params[name]
        return f"{{Ref {name}}}"  # a resource: the same symbol in every stack

    def sub(self, text, variables):
        def one(match):
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                return f"{{GetAtt {name}}}"
            value = self.ref(name)
            return ",".join(value) if isinstance(value, list) else str(value)

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def eval(self, node):
        if isinstance(node, list):
            return [v for v in (self.eval(item) for item in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg)
            if key == "Fn::If":
                return self.eval(arg[1] if self.condition(arg[0]) else arg[2])
            if key == "Fn::Equals":
                a, b = (self.eval(v) for v in arg)
                return str(a) == str(b)
            if key == "Fn::Not":
                return not self.eval(arg[0])
            if key == "Fn::And":
                return all(self.eval(v) for v in arg)
            if key == "Fn::Or":
                return any(self.eval(v) for v in arg)
            if key == "Fn::Select":
                index, items = self.eval(arg[0]), self.eval(arg[1])
                return items[int(index)]
            if key == "Fn::Split":
                return self.eval(arg[1]).split(arg[0])
            if key == "Fn::Join":
                return arg[0].join(str(v) for v in self.eval(arg[1]))
            if key == "Fn::Sub":
                if isinstance(arg, str):
                    return self.sub(arg, {})
                return self.sub(arg[0], {k: self.eval(v) for k, v in arg[1].items()})
            if key == "Fn::GetAtt":
                path = arg if isinstance(arg, str) else ".".join(arg)
                return f"{{GetAtt {path}}}"
            if key.startswith("Fn::"):
                raise SystemExit(f"test_template.py cannot evaluate {key} yet: teach it")
        return {k: v for k, v in ((k, self.eval(v)) for k, v in node.items()) if v is not NO_VALUE}


def create_only(resource_type):
    if resource_type in SAM_CREATE_ONLY:
        return SAM_CREATE_ONLY[resource_type]
    schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema(region="us-east-1", resource_type=resource_type)
    return schema.schema.get("createOnlyProperties", [])


def pointer(resource, path):
    node = resource
    for part in path.strip("/").split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def growth_breaks(template, before, after, parameters):
    """What adding clusters (ClusterNames before -> after) removes or replaces."""
    old = Stack(template, {**BASE, **parameters, "ClusterNames": before}).resources()
    new = Stack(template, {**BASE, **parameters, "ClusterNames": after}).resources()
    problems = []
    for logical, resource in sorted(old.items()):
        if logical not in new:
            problems.append(f"{logical} ({resource['Type']}) is deleted")
            continue
        if new[logical]["Type"] != resource["Type"]:
            problems.append(f"{logical} changes type")
            continue
        for path in create_only(resource["Type"]):
            # Schema paths are /properties/<Name>/..., under the resource's Properties.
            inside = path.replace("/properties/", "/Properties/", 1)
            was, becomes = pointer(resource, inside), pointer(new[logical], inside)
            if was != becomes:
                problems.append(f"{logical} is replaced: {path} {was!r} -> {becomes!r}")
    return problems


def check_growth(template, label):
    failures = []
    for set_name, parameters in PARAMETER_SETS.items():
        for before, after in GROWTH:
            for problem in growth_breaks(template, before, after, parameters):
                failures.append(f"{label}: ClusterNames {before!r} -> {after!r} ({set_name}): {problem}")
    return failures


def check_the_check():
    """The growth check can fail: a log group named after the single cluster
    (what the template did before) must be reported."""
    template = {
        "Parameters": {"ClusterNames": {"Type": "String", "Default": ""}},
        "Conditions": {
            "SingleCluster": {"Fn::Equals": [{"Fn::Select": [0, {"Fn::Split": [",", {"Ref": "ClusterNames"}]}]},
                                             {"Ref": "ClusterNames"}]},
        },
        "Resources": {
            "Logs": {"Type": "AWS::Logs::LogGroup", "Properties": {"LogGroupName": {"Fn::If": [
                "SingleCluster", {"Fn::Sub": "/headroom/${ClusterNames}"}, {"Fn::Sub": "/headroom/${AWS::StackName}"}]}}},
            "Entry": {"Type": "AWS::EKS::AccessEntry", "Condition": "SingleCluster",
                      "Properties": {"ClusterName": {"Ref": "ClusterNames"}, "PrincipalArn": "arn", "Type": "STANDARD"}},
        },
    }
    found = growth_breaks(template, "a", "a,b", {})
    wanted = ["Entry (AWS::EKS::AccessEntry) is deleted", "Logs is replaced: /properties/LogGroupName"]
    if not all(any(problem.startswith(w) for problem in found) for w in wanted):
        return [f"the growth check misses what it must catch: {found}"]
    return []


def statements(resources):
    """Every IAM statement of the function role's policies, inline or not."""
    found = []
    for resource in resources.values():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                found += policy["PolicyDocument"]["Statement"]
        elif resource["Type"] == "AWS::IAM::RolePolicy":
            found += props["PolicyDocument"]["Statement"]
    return found


def actions(statement):
    listed = statement["Action"]
    return [listed] if isinstance(listed, str) else listed


def resources_of(statement):
    listed = statement["Resource"]
    return [listed] if isinstance(listed, str) else listed


def iam_matches(pattern, arn):
    return fnmatch.fnmatchcase(arn, pattern.replace("[", "[[]"))


def check_subnet_tag_keys(template, label):
    """CreateSubnet and its tag-on-create allow the tag keys headroom writes
    (the managed tag and Name, shared/core/src/planner/) and no others."""
    failures = []
    stack = Stack(template, {**BASE, "ClusterNames": "a"})
    wanted = sorted([stack.params["ManagedTagKey"], "Name"])
    for statement in statements(stack.resources()):
        subnet_part = any(r.endswith(":subnet/*") for r in resources_of(statement))
        if not subnet_part or not {"ec2:CreateSubnet", "ec2:CreateTags"} & set(actions(statement)):
            continue
        keys = statement.get("Condition", {}).get("ForAllValues:StringEquals", {}).get("aws:TagKeys")
        if sorted(keys or []) != wanted:
            failures.append(f"{label}: {statement.get('Sid')} allows tag keys {keys}, not exactly {wanted}")
    return failures


def check_capacity_alarm_names(template, label):
    """A stack may write its own kept capacity alarms and never those of a
    stack whose name starts with its own: the name is
    <CAPACITY_ALARM_PREFIX>.<cluster>-min-az-free-... (shared/src/aws/alarms.rs)."""
    failures = []

    def stack(name):
        resources = Stack(template, {**BASE, "ClusterNames": "a,b"}, stack_name=name).resources()
        prefix = pointer(resources["CapacityCheckFunction"], "/Properties/Environment/Variables/CAPACITY_ALARM_PREFIX")
        arns = [f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{prefix}.{cluster}-min-az-free-{what}"
                for cluster in ("b", "c-d") for what in ("ip-addresses", "prefixes")]
        granted = [r for s in statements(resources) if "cloudwatch:PutMetricAlarm" in actions(s)
                   for r in resources_of(s)]
        invoking = [r["Properties"]["SourceArn"] for r in resources.values()
                    if r["Type"] == "AWS::Lambda::Permission"
                    and r["Properties"].get("Principal") == "lambda.alarms.cloudwatch.amazonaws.com"]
        return arns, granted, invoking

    own, granted, invoking = stack("team")
    others = [arn for name in ("team-x", "teamx", "team-team") for arn in stack(name)[0]]
    if not granted or not invoking:
        failures.append(f"{label}: no PutMetricAlarm grant or no alarm invoke permission with two clusters")
    for patterns, what in ((granted, "PutMetricAlarm"), (invoking, "the on-alarm invoke permission")):
        for arn in own:
            if not any(iam_matches(p, arn) for p in patterns):
                failures.append(f"{label}: {what} does not cover the stack's own {arn}")
        for arn in others:
            if any(iam_matches(p, arn) for p in patterns):
                failures.append(f"{label}: {what} of stack 'team' also covers another stack's {arn}")
    return failures


def check_topic_key(template, label):
    """With NotificationKmsKeyArn the topic is encrypted with it and the role
    may use it through SNS only; without, no KMS permission at all."""
    failures = []
    with_key = Stack(template, {**BASE, "ClusterNames": "a", "NotificationKmsKeyArn": KEY_ARN}).resources()
    kms = [s for s in statements(with_key) if any(a.startswith("kms:") for a in actions(s))]
    wanted = {"Effect": "Allow", "Action": ["kms:GenerateDataKey*", "kms:Decrypt"], "Resource": KEY_ARN,
              "Condition": {"StringEquals": {"kms:ViaService": f"sns.{REGION}.amazonaws.com"}}}
    if [{k: v for k, v in s.items() if k != "Sid"} for s in kms] != [wanted]:
        failures.append(f"{label}: the KMS statements are {kms}, not [{wanted}]")
    topic = with_key.get("NotificationTopic", {}).get("Properties", {})
    if topic.get("KmsMasterKeyId") != KEY_ARN:
        failures.append(f"{label}: the topic is not encrypted with NotificationKmsKeyArn: {topic}")
    without = Stack(template, {**BASE, "ClusterNames": "a"}).resources()
    if any(a.startswith("kms:") for s in statements(without) for a in actions(s)):
        failures.append(f"{label}: KMS permissions without NotificationKmsKeyArn")
    if "KmsMasterKeyId" in without["NotificationTopic"]["Properties"]:
        failures.append(f"{label}: a topic key without NotificationKmsKeyArn")
    return failures


def main(paths):
    failures = check_the_check()
    for path in paths:
        template, errors = decode(path)
        if errors or template is None:
            sys.exit(f"cannot parse {path}: {[str(e) for e in errors]}")
        template = copy.deepcopy(template)
        failures += check_growth(template, path)
        failures += check_subnet_tag_keys(template, path)
        failures += check_capacity_alarm_names(template, path)
        failures += check_topic_key(template, path)
        if not failures:
            print(f"{path}: adding clusters deletes and replaces nothing; subnet tag keys, capacity-alarm "
                  "names and the topic key are scoped")
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
