"""Checks that the shell in a Markdown page would run as written.

    python scripts/check_docs.py --headroom target/debug/headroom docs/getting-started.md
    python scripts/check_docs.py --self-test --headroom target/debug/headroom

For every fenced `sh`, `bash` or `console` block (in `console`, the lines
after `$ ` and their continuations):

  * each block parses (`bash -n`), and all of them together, in the order a
    reader runs them in one shell, pass shellcheck;
  * every `aws <service> <command>` exists in the AWS CLI's own command table
    (awscli's clidriver, so customisations such as `cloudformation deploy`,
    `eks update-kubeconfig` and `s3 cp` are known), and so does every
    `--flag` it is given (its own arguments or the global ones);
  * every `headroom <command>` and `--flag` is in the CLI's `--help`;
  * every stack parameter named (`ParameterKey=X`, `--parameter-overrides
    X=...`) exists in infra/template.yaml or is one the release template adds
    (scripts/plain_template.py).

Exits 1 with one line per finding, `file:line: message`. Run by
scripts/check-docs.sh (which installs awscli and shellcheck into .venv-docs)."""

import argparse
import ast
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
# Words that start a new simple command after them.
SEPARATORS = {"|", "||", "&&", ";", "&", "(", ")", "{", "}", "!", "do", "then", "else", "elif", "if", "while", "until", "time"}
GLOBAL_OPTIONS_WITH_VALUE = {"region", "output", "query", "profile", "endpoint-url", "cli-read-timeout", "cli-connect-timeout", "ca-bundle", "color"}
WRAPPERS = {"export", "exec", "command", "sudo", "env", "xargs", "-r", "time"}
# What a release download URL may hold in place of a machine or an architecture.
RELEASE_URL_VARIABLES = {"$ARCH": ["arm64", "x86_64"], "__SUBST__": ["x86_64", "aarch64"]}  # $(uname -m)
# AWS CLI v2 commands that awscli 1.x (the one on PyPI) lacks, with their options.
AWS_CLI_V2_ONLY = {
    ("logs", "tail"): {"follow", "since", "format", "filter-pattern", "log-stream-names", "log-stream-name-prefix"},
}
# shellcheck findings that say nothing about a page a person reads top to bottom.
SHELLCHECK_EXCLUDE = ["SC2164"]  # cd without `|| exit`: a reader sees a failed cd


@dataclass
class Block:
    path: str
    line: int  # line of the first line of the block's body in the page
    language: str
    lines: list = field(default_factory=list)  # (page line, text)


@dataclass
class Command:
    path: str
    line: int
    words: list


def blocks_of(path, text):
    """The fenced shell blocks of a Markdown page, with their page lines."""
    blocks, current, fence = [], None, None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if current is None:
            match = re.match(r"^(`{3,}|~{3,})\s*([A-Za-z0-9_+-]*)", stripped)
            if match:
                fence = match.group(1)
                language = match.group(2).lower()
                current = Block(path, number + 1, language) if language in SHELL_LANGUAGES else Block(path, number + 1, "")
            continue
        if stripped.startswith(fence) and stripped.strip(fence[0]) == "":
            if current.language:
                blocks.append(current)
            current = None
            continue
        current.lines.append((number, line))
    if current is not None:
        blocks.append(Block(path, current.line, "unterminated"))
    return blocks


def script_lines(block):
    """(page line, shell text) of a block: a `console` block keeps only what
    follows `$ ` and its continuation lines."""
    if block.language != "console":
        return block.lines
    kept, continuing = [], False
    for number, line in block.lines:
        if continuing or line.startswith("$ "):
            text = line[2:] if line.startswith("$ ") and not continuing else line
            kept.append((number, text))
            continuing = text.rstrip().endswith("\\")
    return kept


def logical_lines(lines):
    """Joins backslash continuations and lines left open by a trailing pipe or
    `&&`: (page line of the start, text)."""
    joined, start, parts = [], None, []
    for number, text in lines:
        if start is None:
            start = number
        stripped = text.rstrip()
        if stripped.endswith("\\"):
            parts.append(stripped[:-1])
            continue
        parts.append(text)
        if re.search(r"(\||&&|\|\|)\s*(#.*)?$", stripped) and not stripped.lstrip().startswith("#"):
            continue
        joined.append((start, " ".join(parts)))
        start, parts = None, []
    if parts:
        joined.append((start, " ".join(parts)))
    return joined


def substitutions(text):
    """`$( … )` bodies, innermost included, and the text with each replaced by a
    placeholder word. Quotes inside are left to shlex."""
    found, out, i = [], [], 0
    while i < len(text):
        if text.startswith("$(", i) and not text.startswith("$((", i):
            depth, j = 1, i + 2
            while j < len(text) and depth:
                if text[j] == "(":
                    depth += 1
                elif text[j] == ")":
                    depth -= 1
                j += 1
            body = text[i + 2 : j - 1]
            inner, rest = substitutions(body)
            found.extend(inner)
            found.append(rest)
            out.append("__SUBST__")
            i = j
        else:
            out.append(text[i])
            i += 1
    return found, "".join(out)


def simple_commands(text):
    """The simple commands of one logical line, as word lists."""
    inner, outer = substitutions(text)
    commands = []
    for piece in inner + [outer]:
        lexer = shlex.shlex(piece, posix=True, punctuation_chars="|&;(){}")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            words = list(lexer)
        except ValueError:
            continue  # unbalanced quotes: bash -n reports it
        current = []
        for word in words:
            if word in SEPARATORS or set(word) <= set("|&;(){}"):
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(word)
        if current:
            commands.append(current)
    stripped = []
    for words in commands:
        # VAR=value and wrappers before the command
        while words and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]) or words[0] in WRAPPERS):
            words = words[1:]
        if words:
            stripped.append(words)
    return stripped


def commands_of(blocks):
    out = []
    for block in blocks:
        for number, text in logical_lines(script_lines(block)):
            for words in simple_commands(text):
                out.append(Command(block.path, number, words))
    return out


# ------------------------------------------------------------------- shell
def check_shell(blocks, shellcheck):
    findings = []
    combined, origin = [], []
    for block in blocks:
        lines = script_lines(block)
        body = "\n".join(text for _, text in lines) + "\n"
        result = subprocess.run(["bash", "-n"], input=body, capture_output=True, text=True)
        if result.returncode != 0:
            for message in result.stderr.strip().splitlines():
                match = re.search(r"line (\d+): (.*)", message)
                where = lines[int(match.group(1)) - 1][0] if match and int(match.group(1)) <= len(lines) else block.line
                findings.append(f"{block.path}:{where}: bash -n: {match.group(2) if match else message}")
        for number, text in lines:
            combined.append(text)
            origin.append((block.path, number))
    if not combined:
        return findings
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as script:
        script.write("#!/usr/bin/env bash\n" + "\n".join(combined) + "\n")
    try:
        result = subprocess.run(
            [shellcheck, "--shell=bash", "--format=gcc", "--exclude=" + ",".join(SHELLCHECK_EXCLUDE), script.name],
            capture_output=True,
            text=True,
        )
    finally:
        os.unlink(script.name)
    for message in result.stdout.splitlines():
        match = re.match(r"^.*?:(\d+):\d+: (.*)$", message)
        if not match:
            continue
        index = int(match.group(1)) - 2  # the shebang line
        path, number = origin[index] if 0 <= index < len(origin) else (blocks[0].path, 0)
        findings.append(f"{path}:{number}: shellcheck: {match.group(2)}")
    return findings


# --------------------------------------------------------------------- aws
class AwsCli:
    def __init__(self):
        from awscli.clidriver import create_clidriver

        self.driver = create_clidriver()
        self.services = self.driver._get_command_table()
        self.global_args = self.driver._get_argument_table()

    @staticmethod
    def children(command):
        """The commands under a service (`cloudformation`) or a customisation
        with subcommands (`s3`, `cloudformation wait`); none under an operation."""
        from awscli.clidriver import ServiceCommand
        from awscli.customizations.commands import BasicCommand

        if isinstance(command, ServiceCommand):
            return command._get_command_table()
        if isinstance(command, BasicCommand):
            return command.subcommand_table or {}
        return {}

    @staticmethod
    def flags(command):
        table = getattr(command, "arg_table", {}) or {}
        return {name for name, arg in table.items() if not getattr(arg, "positional_arg", False)}

    def check(self, command):
        """Findings for one `aws …` command (words after `aws`)."""
        words = command.words[1:]
        where = f"{command.path}:{command.line}"
        global_flags = set(self.global_args)
        # global options may come before the service
        while words and words[0].startswith("--"):
            name = words[0][2:].split("=", 1)[0]
            if name not in global_flags:
                return [f"{where}: aws: unknown global option --{name}"]
            takes_value = name in GLOBAL_OPTIONS_WITH_VALUE and "=" not in words[0]
            words = words[2:] if takes_value else words[1:]
        if not words:
            return [f"{where}: aws: no service"]
        service = words[0]
        v2_only = AWS_CLI_V2_ONLY.get(tuple(words[:2]))
        if v2_only is not None:
            return [f"{where}: aws {' '.join(words[:2])}: unknown option {w.split('=')[0]}"
                    for w in words[2:] if w.startswith("--") and w[2:].split("=")[0] not in v2_only | global_flags]
        if service not in self.services:
            return [f"{where}: aws: unknown service {service!r}"]
        node, path, words = self.services[service], [service], words[1:]
        while True:
            table = self.children(node)
            if not table:
                break
            if words and words[0] in table:
                node, path, words = table[words[0]], path + [words[0]], words[1:]
                continue
            if self.flags(node):
                break  # a command with its own arguments (`cloudformation deploy`, which
                # awscli also gives codedeploy's subcommands by name)
            if not words or words[0].startswith("-"):
                return [f"{where}: aws {' '.join(path)}: no command given"]
            return [f"{where}: aws {' '.join(path)}: unknown command {words[0]!r}"]
        known = self.flags(node) | global_flags
        findings = []
        if path == ["lambda", "invoke"] and "--cli-read-timeout" not in words:
            # The CLI's default 60 s read timeout retries a long invocation (an
            # apply) and shows no report.
            findings.append(f"{where}: aws lambda invoke without --cli-read-timeout 0")
        for word in words:
            if not word.startswith("--") or len(word) < 3:
                continue
            name = word[2:].split("=", 1)[0]
            if name not in known and not (name.startswith("no-") and name[3:] in known):
                findings.append(f"{where}: aws {' '.join(path)}: unknown option --{name}")
        return findings


# ---------------------------------------------------------------- headroom
def help_flags(text):
    return set(re.findall(r"(?m)^\s+(?:-[A-Za-z0-9], )?(--[a-z0-9][a-z0-9-]*)", text)) | set(
        re.findall(r"(?m)^\s+(-[A-Za-z0-9])[ ,]", text)
    )


def help_commands(text):
    match = re.search(r"(?ms)^Commands:\n(.*?)(?:\n\S|\Z)", text)
    return set(re.findall(r"(?m)^\s+([a-z][a-z0-9-]*)\s", match.group(1))) if match else set()


class HeadroomCli:
    def __init__(self, binary):
        run = lambda *args: subprocess.run([binary, *args], capture_output=True, text=True, check=True).stdout
        top = run("--help")
        self.commands = help_commands(top) - {"help"}
        self.global_flags = help_flags(top)
        self.flags = {name: help_flags(run(name, "--help")) for name in self.commands}
        if not self.commands:
            raise SystemExit(f"{binary} --help lists no commands")

    def check(self, command):
        where = f"{command.path}:{command.line}"
        words = [w for w in command.words[1:]]
        name = next((w for w in words if not w.startswith("-")), None)
        if name not in self.commands:
            return [f"{where}: headroom: unknown command {name!r} (known: {', '.join(sorted(self.commands))})"]
        known = self.global_flags | self.flags[name]
        findings = []
        for word in words:
            if word.startswith("-") and word != "-":
                flag = word.split("=", 1)[0]
                if flag not in known:
                    findings.append(f"{where}: headroom {name}: unknown option {flag}")
        return findings


# -------------------------------------------------------- stack parameters
def template_parameters(template_path, plain_template_path):
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    with open(template_path) as f:
        names = set((yaml.load(f, Loader=Loader) or {}).get("Parameters", {}))
    with open(plain_template_path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "RELEASE_PARAMETERS" for t in node.targets):
            names |= {key.value for key in node.value.keys}
    return names


def check_parameters(commands, parameters):
    findings = []
    for command in commands:
        where = f"{command.path}:{command.line}"
        named = []
        for i, word in enumerate(command.words):
            named += re.findall(r"ParameterKey=([^,\s]+)", word)
            if word == "--parameter-overrides":
                for value in command.words[i + 1 :]:
                    if value.startswith("--"):
                        break
                    if "ParameterKey=" not in value and "=" in value:
                        named.append(value.split("=", 1)[0])
        for name in named:
            if name not in parameters:
                findings.append(f"{where}: stack parameter {name} is not in infra/template.yaml")
    return findings


# --------------------------------------------------------- release files
def check_release_files(commands, artefacts):
    """Every file downloaded from `$RELEASE/…` is one scripts/release.sh makes."""
    findings = []
    for command in commands:
        for word in command.words:
            if "$RELEASE/" not in word:
                continue
            names = [word.split("$RELEASE/", 1)[1]]
            for variable, values in RELEASE_URL_VARIABLES.items():
                names = [n.replace(variable, v) for n in names for v in (values if variable in n else [variable])]
            for name in names:
                if name not in artefacts:
                    findings.append(f"{command.path}:{command.line}: {name} is not a release file (scripts/release.sh --list)")
    return findings


# -------------------------------------------------------------------- main
def check_page(path, text, shellcheck, aws, headroom, parameters, artefacts):
    blocks = blocks_of(path, text)
    findings = [f"{b.path}:{b.line}: unterminated code block" for b in blocks if b.language == "unterminated"]
    blocks = [b for b in blocks if b.language != "unterminated"]
    findings += check_shell(blocks, shellcheck)
    commands = commands_of(blocks)
    for command in commands:
        program = os.path.basename(command.words[0])
        if program == "aws":
            findings += aws.check(command)
        elif program == "headroom":
            findings += headroom.check(command)
    findings += check_parameters(commands, parameters)
    findings += check_release_files(commands, artefacts)
    return findings, len(blocks), len(commands)


SELF_TEST_GOOD = """\
```sh
export CLUSTER=demo-cluster STACK=headroom
aws eks update-kubeconfig --name "$CLUSTER" --region us-west-2
aws cloudformation deploy --stack-name "$STACK" --template-file headroom.yaml \\
  --parameter-overrides ClusterNames="$CLUSTER" DryRun=true ArtifactPrefix=headroom/v1
role=$(aws cloudformation describe-stacks --stack-name "$STACK" \\
  --query "Stacks[0].Outputs[?OutputKey=='FunctionRoleArn'].OutputValue" --output text)
echo "$role" | cat
aws lambda invoke --cli-read-timeout 0 --function-name f --payload fileb://e.json report.json
headroom plan "$CLUSTER" --region us-west-2
curl -fsSL --remote-name-all "$RELEASE/SHA256SUMS" "$RELEASE/on-alarm-$ARCH.zip" "$RELEASE/headroom-linux-$(uname -m)"
```
"""

# Each broken line, and what the checker must say about it.
SELF_TEST_BAD = [
    ("aws eks update-kubeconfig --cluster demo", "unknown option --cluster"),
    ("aws cloudformation deploy-stack --stack-name x", "unknown command 'deploy-stack'"),
    ("aws lambda invoke --function-name f --read-timeout 0 out.json", "unknown option --read-timeout"),
    ("x=$(aws eks describe-cluster --cluster-name c --query cluster.arn)", "unknown option --cluster-name"),
    ("aws s3 copy a b", "unknown command 'copy'"),
    ("aws lambda invoke --function-name f --payload fileb://e.json out.json", "without --cli-read-timeout 0"),
    ("aws --region us-west-2 ekz list-clusters", "unknown service 'ekz'"),
    ("aws cloudformation deploy --stack-name s --template-file t \\\n  --parameter-overrides DryRun=true ClusterName=x", "stack parameter ClusterName"),
    ("aws cloudformation create-stack-set --stack-set-name s --parameters ParameterKey=Dryrun,ParameterValue=true", "stack parameter Dryrun"),
    ("headroom plans demo", "unknown command 'plans'"),
    ("headroom plan demo --dry-run", "unknown option --dry-run"),
    ("echo $unquoted_and_unset", "shellcheck"),
    ("if true; then echo", "bash -n"),
    ('curl -fsSL --remote-name-all "$RELEASE/headroom-$ARCH.tar.gz"', "headroom-arm64.tar.gz is not a release file"),
    ('curl -fsSLO "$RELEASE/headroom-$(uname -m)"', "headroom-x86_64 is not a release file"),
]


SELF_TEST_ARTEFACTS = {"SHA256SUMS", "on-alarm-arm64.zip", "on-alarm-x86_64.zip", "headroom-linux-x86_64", "headroom-linux-aarch64"}


def self_test(shellcheck, aws, headroom, parameters):
    failures = []
    findings, _, _ = check_page("good.md", SELF_TEST_GOOD, shellcheck, aws, headroom, parameters, SELF_TEST_ARTEFACTS)
    if findings:
        failures.append("a correct page was reported:\n  " + "\n  ".join(findings))
    for snippet, expected in SELF_TEST_BAD:
        page = "```sh\n" + snippet + "\n```\n"
        findings, _, _ = check_page("bad.md", page, shellcheck, aws, headroom, parameters, SELF_TEST_ARTEFACTS)
        if not any(expected in f for f in findings):
            failures.append(f"not caught: {snippet!r} (expected {expected!r}, got {findings})")
    if failures:
        print("check_docs self-test FAILED:\n" + "\n".join(failures), file=sys.stderr)
        return 1
    print(f"check_docs self-test: 1 correct page passes, {len(SELF_TEST_BAD)} broken snippets caught")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pages", nargs="*")
    parser.add_argument("--headroom", required=True, help="the headroom CLI binary whose --help is the reference")
    parser.add_argument("--shellcheck", default="shellcheck")
    parser.add_argument("--template", default=os.path.join(ROOT, "infra/template.yaml"))
    parser.add_argument("--release-files", help="file listing what a release holds, one a line (scripts/release.sh --list)")
    parser.add_argument("--self-test", action="store_true", help="check the checker on known good and bad snippets")
    args = parser.parse_args()
    aws, headroom = AwsCli(), HeadroomCli(args.headroom)
    parameters = template_parameters(args.template, os.path.join(ROOT, "scripts/plain_template.py"))
    if args.self_test:
        return self_test(args.shellcheck, aws, headroom, parameters)
    if not args.release_files:
        parser.error("--release-files is required to check pages")
    with open(args.release_files) as f:
        artefacts = set(f.read().split())
    status = 0
    for page in args.pages:
        with open(page) as f:
            findings, blocks, commands = check_page(
                os.path.relpath(page, ROOT), f.read(), args.shellcheck, aws, headroom, parameters, artefacts
            )
        for finding in findings:
            print(finding)
        if findings:
            status = 1
        print(f"{os.path.relpath(page, ROOT)}: {blocks} shell blocks, {commands} commands, {len(findings)} findings", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
