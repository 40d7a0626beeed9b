"""The plain CloudFormation template of a release: infra/template.yaml with the
SAM transform already applied, deploying prebuilt zips from S3.

Run through scripts/plain-template.sh (it provides the interpreter from
.venv-infra, where aws-sam-translator and cfn-lint are installed). Offline: the
transform runs locally and resolves no managed policy.

Why: CloudFormation StackSets with service-managed permissions do not accept
templates that use macros, and AWS::Serverless is one; SAM's CodeUri cannot be
switched between a local build and S3 with Fn::If. So a release ships this
template (dist/headroom.yaml) besides the SAM template, and installing from a
release needs neither the SAM CLI nor Rust.

What changes against infra/template.yaml:
  * every function's CodeUri becomes
      Bucket: ${ArtifactBucketPrefix}-${AWS::Region}   (one bucket per Region:
                                                       Lambda reads code from
                                                       its own Region only)
      Key:    ${ArtifactPrefix}/<binary>-${Architecture}.zip
    from three new parameters; the SAM build metadata (BuildMethod,
    BuildProperties) is dropped;
  * Architectures comes from the Architecture parameter (arm64 or x86_64);
  * then the SAM transform. The checkov and cfn-lint suppressions of each
    function (resource Metadata) are kept on the AWS::Lambda::Function it
    becomes.

--all-options additionally resolves every Fn::If to its first (true) branch:
not deployable as such, but it shows a scanner every optional statement and
resource at once (checkov skips what sits inside Fn::If).
"""

import argparse
import copy
import json
import os
import sys

import yaml
from cfnlint.decode import decode
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
SAM_BUILD_METADATA = ("BuildMethod", "BuildProperties")

RELEASE_PARAMETERS = {
    "ArtifactBucketPrefix": {
        "Type": "String",
        "AllowedPattern": "^[a-z0-9][a-z0-9.-]{1,40}[a-z0-9]$",
        "ConstraintDescription": "the start of an S3 bucket name; the Region is appended with a hyphen.",
        "Description": (
            "S3 buckets that hold the release zips, one per Region, named <ArtifactBucketPrefix>-<Region> "
            "(for example my-org-headroom-us-west-2). In an organisation, readable by its accounts "
            "(docs/deploy.md, \"Install for a whole organisation\")."
        ),
    },
    "ArtifactPrefix": {
        "Type": "String",
        "AllowedPattern": "^[A-Za-z0-9._/+-]{1,200}$",
        "Description": "Key prefix of the zips in those buckets: <ArtifactPrefix>/<function>-<Architecture>.zip.",
    },
    "Architecture": {
        "Type": "String",
        "Default": "arm64",
        "AllowedValues": ["arm64", "x86_64"],
        "Description": "Processor architecture of the functions; the zips of that architecture are deployed.",
    },
}


def plain(template, version):
    """The SAM template rewritten to deploy the release zips, before the transform."""
    template = copy.deepcopy(template)
    parameters = template.setdefault("Parameters", {})
    for name, definition in RELEASE_PARAMETERS.items():
        if name in parameters:
            sys.exit(f"infra/template.yaml already has a parameter {name}")
        parameters[name] = copy.deepcopy(definition)
    parameters["ArtifactPrefix"]["Default"] = f"headroom/{version}"

    groups = (
        template.setdefault("Metadata", {})
        .setdefault("AWS::CloudFormation::Interface", {})
        .setdefault("ParameterGroups", [])
    )
    groups.insert(0, {"Label": {"default": "Release artefacts"}, "Parameters": list(RELEASE_PARAMETERS)})

    function_globals = template.setdefault("Globals", {}).setdefault("Function", {})
    function_globals.pop("CodeUri", None)
    function_globals["Architectures"] = [{"Ref": "Architecture"}]

    functions = 0
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") != SERVERLESS_FUNCTION:
            continue
        metadata = resource.get("Metadata", {})
        binary = metadata.get("BuildProperties", {}).get("Binary")
        if not binary:
            sys.exit(f"{logical_id}: no Metadata.BuildProperties.Binary to name its zip after")
        for key in SAM_BUILD_METADATA:
            metadata.pop(key, None)
        resource["Properties"]["CodeUri"] = {
            "Bucket": {"Fn::Sub": "${ArtifactBucketPrefix}-${AWS::Region}"},
            "Key": {"Fn::Sub": "${ArtifactPrefix}/" + binary + "-${Architecture}.zip"},
        }
        functions += 1
    if not functions:
        sys.exit("no AWS::Serverless::Function in the template")

    template["Description"] = (
        f"{template.get('Description', '').strip()} Release {version}: plain CloudFormation generated "
        "by scripts/plain-template.sh from infra/template.yaml; functions from "
        "s3://<ArtifactBucketPrefix>-<Region>/<ArtifactPrefix>/."
    )
    return template


class NoManagedPolicies:
    """The template names no managed policy by name, so none needs resolving."""

    def load(self):
        return {}


def sam_transform(template):
    try:
        expanded = transform(template, {}, NoManagedPolicies())
    except InvalidDocumentException as exc:
        for cause in exc.causes:
            print(f"SAM: {cause.message}", file=sys.stderr)
        sys.exit(1)
    # cfn-lint's decoder gives str/dict subclasses; make them plain.
    expanded = json.loads(json.dumps(expanded))
    # Keep each function's lint and scan suppressions on what it became.
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") != SERVERLESS_FUNCTION or not resource.get("Metadata"):
            continue
        target = expanded["Resources"].get(logical_id)
        if target is not None and target.get("Type") == "AWS::Lambda::Function":
            merged = json.loads(json.dumps(resource["Metadata"]))
            merged.update(target.get("Metadata", {}))
            target["Metadata"] = merged
    return expanded


def all_options(node):
    """Every Fn::If replaced by its first branch (for scanners only)."""
    if isinstance(node, list):
        return [all_options(item) for item in node]
    if isinstance(node, dict):
        if set(node) == {"Fn::If"}:
            return all_options(node["Fn::If"][1])
        return {key: all_options(value) for key, value in node.items()}
    return node


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--template", default=os.path.join(root, "infra", "template.yaml"))
    parser.add_argument("--version", required=True, help="release version; default of ArtifactPrefix is headroom/<version>")
    parser.add_argument("--output", required=True, help="where to write the plain template (.yaml or .json)")
    parser.add_argument("--all-options", action="store_true", help="resolve every Fn::If to its true branch (scanning only)")
    args = parser.parse_args()

    template, errors = decode(args.template)
    if errors or template is None:
        sys.exit(f"cannot parse {args.template}: {[str(e) for e in errors]}")
    template = json.loads(json.dumps(template))

    expanded = sam_transform(plain(template, args.version))
    if args.all_options:
        expanded = all_options(expanded)
        expanded.pop("Conditions", None)
        for resource in expanded["Resources"].values():
            resource.pop("Condition", None)
        for output in expanded.get("Outputs", {}).values():
            output.pop("Condition", None)

    with open(args.output, "w") as fh:
        if args.output.endswith(".json"):
            json.dump(expanded, fh, indent=1)
            fh.write("\n")
        else:
            fh.write(f"# headroom {args.version}: generated by scripts/plain-template.sh from infra/template.yaml.\n")
            fh.write("# Plain CloudFormation (the SAM transform is applied); do not edit.\n")
            yaml.safe_dump(expanded, fh, sort_keys=False, width=120, allow_unicode=False)
    kinds = sorted({r["Type"] for r in expanded["Resources"].values()})
    print(f"{args.output}: {len(expanded['Resources'])} resources ({', '.join(kinds)})")


if __name__ == "__main__":
    main()
