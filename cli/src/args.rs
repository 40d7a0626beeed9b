//! The command line: commands and global options with clap's derive, and
//! one flag per setting of the functions, generated from
//! [`headroom::config::SETTINGS`] so that names, defaults and meanings
//! cannot drift from the functions' environment.

use std::path::PathBuf;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use headroom::Config;
use headroom::config::SETTINGS;

const AFTER_HELP: &str = "\
Examples:
  headroom status demo-cluster
  headroom plan demo-cluster --profile prod --region eu-west-1
  headroom apply demo-cluster --subnet-mode pods
  headroom explain report.json

Settings: every environment variable of the functions is a flag of the same
name (NODECLASS_NAME is --nodeclass-name) and is read from the environment
when the flag is absent; `headroom help settings` lists them.

Exit codes: 0 done (including no-op and planned), 1 refused or failed,
2 bad usage or an invalid setting.";

#[derive(Debug, Parser)]
#[command(
    name = "headroom",
    version,
    about = "See and add IPv4 headroom of an EKS Auto Mode cluster, from your terminal."
)]
#[command(after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: Global,
}

#[derive(Debug, Args)]
pub struct Global {
    /// AWS profile from ~/.aws/config (default: the standard credential chain).
    #[arg(long, global = true, env = "AWS_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,
    /// AWS region (default: the profile's or AWS_REGION).
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// Kubeconfig file(s), `:`-separated like KUBECONFIG (default: KUBECONFIG, else ~/.kube/config if it exists).
    #[arg(long, global = true, value_name = "PATHS")]
    pub kubeconfig: Option<String>,
    /// Kubeconfig context (default: the one named like the cluster or its ARN, else the current one).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Ignore any kubeconfig: reach the API server through EKS with a token signed by your AWS credentials.
    #[arg(long, global = true, conflicts_with_all = ["kubeconfig", "context"])]
    pub eks_token: bool,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    /// When to colour the output (NO_COLOR is respected with `auto`).
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Log what happens (`-v` info, `-vv` debug) on stderr.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Free single IPs and free /28 prefixes per AZ and per subnet, with the
    /// thresholds, and which NodeClass and NodePool use each subnet.
    #[command(after_help = "Example:\n  headroom status demo-cluster --output json")]
    Status(ClusterArgs),
    /// What the functions would do now: the decision and the plan, with the
    /// permissions it needs checked (EC2 DryRun, Kubernetes dryRun). Changes nothing.
    #[command(after_help = "Example:\n  headroom plan demo-cluster --force")]
    Plan(PlanArgs),
    /// The plan, a confirmation, then each step as it completes and the verification.
    #[command(after_help = "Example:\n  headroom apply demo-cluster --yes")]
    Apply(ApplyArgs),
    /// A function's report (its answer, or a saved `--output json`) rendered for a person.
    #[command(
        after_help = "Examples:\n  aws lambda invoke --cli-read-timeout 0 --function-name <capacity-check> --payload fileb://event.json report.json\n  headroom explain report.json\n  headroom plan demo-cluster -o json | headroom explain"
    )]
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// The EKS cluster's name.
    pub cluster: String,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Plan an expansion even if every AZ is above the thresholds.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Apply without asking for confirmation.
    #[arg(long, short)]
    pub yes: bool,
    /// Publish the outcome as the functions do: the `Remediations` metric
    /// and, with --notify-topic-arn, a message to the operators' topic.
    #[arg(long)]
    pub announce: bool,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The report file; `-` or nothing reads stdin.
    pub report: Option<PathBuf>,
}

/// Settings the command line gives another way: the cluster is an argument,
/// and dry run is `plan` versus `apply`.
const NOT_FLAGS: [&str; 2] = ["CLUSTER_NAME", "DRY_RUN"];

/// `NODECLASS_NAME` → `nodeclass-name`.
pub fn flag_name(setting: &str) -> String {
    setting.to_ascii_lowercase().replace('_', "-")
}

/// The clap command: the derived one plus a global flag per setting.
pub fn command() -> clap::Command {
    let mut command = Cli::command();
    for setting in SETTINGS.iter().filter(|s| !NOT_FLAGS.contains(&s.name)) {
        let mut arg = clap::Arg::new(setting.name)
            .long(flag_name(setting.name))
            .env(setting.name)
            .value_name("VALUE")
            .global(true)
            .help_heading("Settings (same names and defaults as the functions' environment)")
            .hide_env_values(false)
            .help(plain(setting.meaning));
        if !setting.default.is_empty() {
            arg = arg.default_value(setting.default);
        }
        command = command.arg(arg);
    }
    command
}

/// Markdown backticks are noise in a terminal.
fn plain(text: &str) -> String {
    text.replace('`', "")
}

/// Parsed arguments, and the functions' [`Config`] from the setting flags.
pub struct Parsed {
    pub cli: Cli,
    matches: ArgMatches,
}

impl Parsed {
    pub fn from_args(
        args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
    ) -> clap::error::Result<Self> {
        let matches = command().try_get_matches_from(args)?;
        let cli = Cli::from_arg_matches(&matches)?;
        Ok(Parsed { cli, matches })
    }

    /// The settings as the functions would read them from their environment,
    /// validated by the same code. The cluster is the one named.
    pub fn config(&self, cluster: Option<&str>) -> headroom::Result<Config> {
        let matches = self.matches.subcommand().map_or(&self.matches, |(_, sub)| sub);
        Config::from_lookup(|name| match name {
            "CLUSTER_NAME" => cluster.map(str::to_owned),
            "DRY_RUN" => None,
            _ => matches.get_one::<String>(name).cloned(),
        })
        .map_err(headroom::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Parsed {
        Parsed::from_args(std::iter::once("headroom").chain(args.iter().copied())).expect("valid arguments")
    }

    #[test]
    fn every_setting_of_the_functions_is_a_flag_with_its_default() {
        let command = command();
        for setting in SETTINGS.iter().filter(|s| !NOT_FLAGS.contains(&s.name)) {
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(flag_name(setting.name).as_str()))
                .unwrap_or_else(|| panic!("no flag for {}", setting.name));
            let defaults: Vec<String> = arg.get_default_values().iter().map(|v| v.to_string_lossy().into()).collect();
            let expected: Vec<String> =
                if setting.default.is_empty() { Vec::new() } else { vec![setting.default.to_owned()] };
            assert_eq!(defaults, expected, "{}", setting.name);
        }
        command.debug_assert();
    }

    #[test]
    fn flags_become_the_functions_settings_and_no_flags_their_defaults() {
        let parsed =
            parse(&["plan", "demo", "--subnet-prefix", "20", "--subnet-mode", "pods", "--create-nodepool", "false"]);
        let config = parsed.config(Some("demo")).unwrap();
        assert_eq!(
            (config.subnet_prefix, config.subnet_mode.to_string(), config.create_nodepool),
            (20, "pods".into(), false)
        );
        assert_eq!(config.clusters, ["demo"]);

        let defaults = parse(&["status", "demo"]).config(Some("demo")).unwrap();
        let expected = Config::from_lookup(|name| (name == "CLUSTER_NAME").then(|| "demo".to_owned())).unwrap();
        assert_eq!(defaults, expected);
    }

    #[test]
    fn settings_may_follow_or_precede_the_command_and_are_validated_by_the_functions_rules() {
        let before = parse(&["--min-free-ips-per-az", "100", "status", "demo"]);
        assert_eq!(before.config(Some("demo")).unwrap().thresholds.min_free_ips_per_az, 100);
        let invalid = parse(&["plan", "demo", "--nodeclass-name", "default"]).config(Some("demo")).unwrap_err();
        assert!(invalid.to_string().contains("NODECLASS_NAME"), "{invalid}");
    }

    #[test]
    fn bad_usage_is_a_clap_error_with_exit_status_2() {
        let unknown = Parsed::from_args(["headroom", "frobnicate"]).err().expect("an error");
        assert_eq!(unknown.exit_code(), 2);
        let conflicting =
            Parsed::from_args(["headroom", "status", "c", "--eks-token", "--context", "x"]).err().expect("an error");
        assert_eq!(conflicting.exit_code(), 2);
        let help = Parsed::from_args(["headroom", "apply", "--help"]).err().expect("help is shown");
        assert_eq!(help.exit_code(), 0);
        assert!(help.to_string().contains("headroom apply demo-cluster --yes"), "examples in every help");
    }
}
