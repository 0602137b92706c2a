//! `deploy/`: every template linted (cfn-lint), the SAM ones transformed
//! offline (aws-sam-translator) and checked against their committed plain
//! CloudFormation, the built artifacts uploaded to the AWS API emulator's S3
//! (AWS CLI), and each stack created on the emulator's CloudFormation with
//! `deploy/stack.py`, as the README's "Deploy on AWS" does. Then what was
//! created is read back (boto3) and the router from the uploaded zip runs
//! with the deployed function's environment, routing a synthetic and a
//! production request to the versions the store names.
//!
//! What the emulator (moto 5.2) cannot create or wire, and so this test does
//! not prove:
//! - `AWS::ApiGatewayV2::*`: it skips the type silently, so the router stack
//!   is deployed with `WithHttpApi=false` (the API is linted and transformed);
//! - the role's `ManagedPolicyArns`: ignored, so the hosts' policy is read
//!   from the IAM stack, and its attachment is checked in the template;
//! - `!Ref` of a layer version: gives no ARN, so the example function gets no
//!   layer; the layer itself is found by its stack's name (the emulator
//!   ignores `LayerName` and `CompatibleArchitectures`), with its size;
//! - one Lambda: it creates CloudFormation's functions in its Docker backend,
//!   while its Lambda API serves the "simple" one once the tests switch to
//!   it, so the stacks are read back before the switch.
//!
//! Needs the x86_64 artifacts: `bash deploy/artifacts.sh x86_64` (`.ci/run`
//! builds them before the tests).

use switchyard_test_support as common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{
    Killed, aws, cargo_lambda_watch, invoke_http_event, moto_lambda, publish_synthetic_header,
    repo_root,
};
use serde_json::{Value, json};

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The AWS CLI against the emulator: `aws --endpoint-url <emulator> ARGS`.
fn aws_cli(args: &[&str]) -> Output {
    run(
        "aws",
        &[&["--endpoint-url", aws::endpoint()], args].concat(),
    )
}

/// [`aws_cli`], failing the test when it fails; its stdout.
fn aws_ok(args: &[&str]) -> String {
    let out = aws_cli(args);
    assert!(
        out.status.success(),
        "aws {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `deploy/stack.py STACK TEMPLATE Key=Value...`: the stack's outputs.
fn stack(name: &str, template: &str, params: &[String]) -> Value {
    let mut args = vec!["deploy/stack.py", name, template];
    args.extend(params.iter().map(String::as_str));
    serde_json::from_str(&ok("python3", &args)).unwrap()
}

fn readback(what: &str, arg: &str) -> Value {
    let script = repo_root().join("host/test-support/support/cfn_readback.py");
    let out = ok("python3", &[script.to_str().unwrap(), what, arg]);
    serde_json::from_str(&out).unwrap()
}

fn artifact(name: &str) -> PathBuf {
    let path = repo_root().join("target/artifacts/x86_64").join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the artifacts with `bash deploy/artifacts.sh x86_64`",
        path.display()
    );
    path
}

fn resources(statement: &Value) -> Vec<String> {
    match &statement["Resource"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().map(|r| r.as_str().unwrap().to_owned()).collect(),
        other => panic!("a statement's Resource: {other}"),
    }
}

/// The router, unzipped from the artifact, attached to the watch's Runtime
/// API with `env`.
fn router_from_zip(zip: &Path, dir: &Path, port: u16, env: &Value, log: &Path) -> Killed {
    ok(
        "unzip",
        &[
            "-q",
            "-o",
            zip.to_str().unwrap(),
            "-d",
            dir.to_str().unwrap(),
        ],
    );
    let mut env: Vec<(String, String)> = env
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    env.push(("AWS_ENDPOINT_URL".into(), aws::endpoint().into()));
    common::router_function(&dir.join("bootstrap"), port, &env, log)
}

/// Which of the emulator's Lambda backends its Lambda API serves: `docker`
/// (where CloudFormation creates functions and layers) or `simple`.
fn moto_lambda_backend(which: &str) {
    let config = json!({"lambda": {"use_docker": which == "docker"}});
    ok(
        "curl",
        &[
            "-sf",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            &config.to_string(),
            &format!("{}/moto-api/config", aws::endpoint()),
        ],
    );
}

#[test]
fn every_template_lints_transforms_as_committed_and_deploys_and_the_deployed_router_routes() {
    let router_zip = artifact("switchyard-router.zip");
    let layer_zip = artifact("switchyard-extension-layer.zip");

    // Lint every template, the SAM ones and what they transform to.
    let templates = [
        "deploy/iam.yaml",
        "deploy/router.yaml",
        "deploy/router.cfn.json",
        "deploy/extension.yaml",
        "deploy/extension.cfn.json",
        "deploy/per-version.yaml",
    ];
    ok("cfn-lint", &templates);
    for t in ["router", "extension"] {
        ok(
            "python3",
            &[
                "deploy/sam-translate.py",
                &format!("deploy/{t}.yaml"),
                "--check",
                &format!("deploy/{t}.cfn.json"),
            ],
        );
    }

    // The artifacts in S3, as the README uploads them.
    let id = common::unique_tag();
    let bucket = format!("sy-deploy-{id}");
    let endpoint = aws::endpoint();
    let s3 = |args: &[&str]| aws_ok(&[&["s3"], args].concat());
    s3(&["mb", &format!("s3://{bucket}")]);
    let router_key = "switchyard/test/x86_64/switchyard-router.zip";
    let layer_key = "switchyard/test/x86_64/switchyard-extension-layer.zip";
    s3(&[
        "cp",
        router_zip.to_str().unwrap(),
        &format!("s3://{bucket}/{router_key}"),
    ]);
    s3(&[
        "cp",
        layer_zip.to_str().unwrap(),
        &format!("s3://{bucket}/{layer_key}"),
    ]);

    // The function the router routes to (made below, with two versions).
    let target = format!("sy-deploy-orders-{id}");
    let target_arn = format!("arn:aws:lambda:us-east-1:123456789012:function:{target}");

    // The emulator keeps two Lambda backends: the one CloudFormation creates
    // functions in, and the "simple" one (no Docker) its Lambda API serves
    // once told to, which the other tests use. The stacks are created and
    // read back with the first; the target is made and invoked in the second.
    moto_lambda_backend("docker");

    // A stack missing a required parameter is refused before anything is
    // created: CloudFormation's own message, no half-created stack.
    let out = run(
        "python3",
        &[
            "deploy/stack.py",
            &format!("sy-router-{id}"),
            "deploy/router.cfn.json",
            &format!("TargetFunctionArns={target_arn}"),
        ],
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("ArtifactBucket"),
        "{said}"
    );
    let described = aws_cli(&[
        "cloudformation",
        "describe-stacks",
        "--stack-name",
        &format!("sy-router-{id}"),
    ]);
    assert!(
        String::from_utf8_lossy(&described.stderr).contains("does not exist"),
        "{described:?}"
    );

    // The stacks, in the README's order.
    let iam_stack = format!("sy-iam-{id}");
    let prefix = format!("/sy-deploy-{}", std::process::id());
    let iam = stack(
        &iam_stack,
        "deploy/iam.yaml",
        &[
            format!("StorePrefix={prefix}"),
            format!("BlobBucket={bucket}"),
        ],
    );
    let store = iam["StoreUri"].as_str().unwrap().to_owned();
    assert_eq!(
        store,
        format!("ssm:{prefix}?blobs=s3://{bucket}/switchyard")
    );
    let router = stack(
        &format!("sy-router-{id}"),
        "deploy/router.cfn.json",
        &[
            format!("IamStack={iam_stack}"),
            format!("ArtifactBucket={bucket}"),
            format!("RouterKey={router_key}"),
            // Two targets: a comma inside one parameter value.
            format!("TargetFunctionArns={target_arn},{target_arn}-payments"),
            "PollInterval=300ms".into(),
            "WithHttpApi=false".into(),
        ],
    );
    let ext = stack(
        &format!("sy-ext-{id}"),
        "deploy/extension.cfn.json",
        &[
            format!("IamStack={iam_stack}"),
            format!("ArtifactBucket={bucket}"),
            format!("LayerKey={layer_key}"),
            format!("CalleeFunctionArns={target_arn}"),
        ],
    );

    // The IAM split, read back: hosts read the store's prefix and its blobs
    // only; the pipeline writes there, deleting only its locks; the signer
    // writes only signatures.
    let account = "arn:aws:ssm:us-east-1:123456789012:parameter";
    let hosts = readback("policy", iam["HostsPolicyArn"].as_str().unwrap());
    let hosts_resources: Vec<String> = hosts
        .as_array()
        .unwrap()
        .iter()
        .flat_map(resources)
        .collect();
    assert_eq!(
        hosts_resources,
        [
            format!("{account}{prefix}/*"),
            format!("{account}{prefix}/infrastructure/*"),
            format!("{account}{prefix}/functions"),
            format!("{account}{prefix}/signatures"),
            format!("arn:aws:s3:::{bucket}/switchyard/*"),
        ],
        "{hosts}"
    );
    for statement in hosts.as_array().unwrap() {
        let actions = statement["Action"].to_string();
        assert!(
            !actions.contains("Put") && !actions.contains("Delete"),
            "hosts never write: {statement}"
        );
    }
    // The resources of the statement of `policy` (an output) allowing `action`.
    let granted = |policy: &str, action: &str| {
        let statements = readback("policy", iam[policy].as_str().unwrap());
        statements
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Action"] == action)
            .map(resources)
            .unwrap_or_else(|| panic!("{policy} allows no {action}: {statements}"))
    };
    assert_eq!(
        granted("PipelinePolicyArn", "ssm:DeleteParameter"),
        [
            format!("{account}{prefix}/locks/*"),
            format!("{account}{prefix}/infrastructure/*")
        ]
    );
    assert_eq!(
        granted("SignerPolicyArn", "ssm:PutParameter"),
        [format!("{account}{prefix}/signatures/*")]
    );

    // The router function as deployed.
    let deployed = readback("function", router["RouterName"].as_str().unwrap());
    assert_eq!(deployed["runtime"], "provided.al2023", "{deployed}");
    assert_eq!(deployed["handler"], "bootstrap");
    assert_eq!(deployed["architectures"], json!(["x86_64"]));
    let env = &deployed["environment"];
    assert_eq!(env["SWITCHYARD_STORE"], store.as_str(), "{deployed}");
    assert_eq!(env["SWITCHYARD_FUNCTION"], "orders");
    let invoke = &deployed["inline"][0];
    assert_eq!(invoke["Action"], "lambda:InvokeFunction", "{deployed}");
    assert_eq!(
        resources(invoke),
        [
            format!("{target_arn}:*"),
            format!("{target_arn}-payments:*")
        ]
    );
    // The hosts' policy is attached in the template (the emulator does not
    // attach a role's ManagedPolicyArns).
    let plain: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/router.cfn.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        plain["Resources"]["RouterRole"]["Properties"]["ManagedPolicyArns"][1],
        json!({"Fn::ImportValue": {"Fn::Sub": "${IamStack}-HostsPolicy"}})
    );

    // The extension stack: the example function with the wrapper, the
    // store and its callees; the layer with the zip's content.
    let checkout = readback("function", ext["CheckoutName"].as_str().unwrap());
    let cenv = &checkout["environment"];
    assert_eq!(
        cenv["AWS_LAMBDA_EXEC_WRAPPER"], "/opt/switchyard-wrapper",
        "{checkout}"
    );
    assert_eq!(cenv["SWITCHYARD_STORE"], store.as_str());
    assert_eq!(cenv["SWITCHYARD_FUNCTIONS"], "orders");
    assert_eq!(
        resources(&checkout["inline"][0]),
        [format!("{target_arn}:*")]
    );
    // The emulator names the layer after the stack and its logical id, not
    // its LayerName (which starts with the stack's name too).
    let layers: Value = serde_json::from_str(&aws_ok(&["lambda", "list-layers"])).unwrap();
    let layer_arn = layers["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            l["LayerName"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("sy-ext-{id}-")))
        })
        .and_then(|l| l["LatestMatchingVersion"]["LayerVersionArn"].as_str())
        .unwrap_or_else(|| panic!("no layer of sy-ext-{id}: {layers}"));
    let layer = readback("layer", layer_arn);
    assert_eq!(
        layer["code_size"],
        std::fs::metadata(&layer_zip).unwrap().len(),
        "the layer holds the zip: {layer}"
    );

    // The store the stacks point at: the candidate in synthetic mode.
    moto_lambda_backend("simple");
    let tmp = tempfile::tempdir().unwrap();
    let (stable, candidate) =
        common::lambda_route_with_two_versions(&store, "orders", &target, tmp.path());

    // The router from the uploaded zip, with the deployed environment.
    let (_watch, port) = cargo_lambda_watch(&repo_root());
    let mut env = env.clone();
    env["SWITCHYARD_CACHE_DIR"] = json!(tmp.path().join("cache").display().to_string());
    let log = tmp.path().join("router.log");
    let _router = router_from_zip(&router_zip, &tmp.path().join("router"), port, &env, &log);
    let answer = |headers: Value| -> Value {
        let out = invoke_http_event(port, "switchyard-lambda", "GET", "/orders/1", headers);
        serde_json::from_slice(&out).unwrap_or_else(|e| {
            panic!(
                "router answer {:?}: {e}; its log: {}",
                String::from_utf8_lossy(&out),
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
    };
    let synthetic = answer(json!({"x-switchyard-synthetic": "true"}));
    assert_eq!(synthetic["statusCode"], 200, "{synthetic}");
    assert_eq!(
        synthetic["headers"]["x-switchyard-target"],
        candidate.as_str()
    );
    assert_eq!(synthetic["headers"]["x-switchyard-traffic"], "synthetic");
    let production = answer(json!({"accept": "*/*"}));
    assert_eq!(
        production["headers"]["x-switchyard-target"],
        stable.as_str(),
        "{production}"
    );
    assert_eq!(production["headers"]["x-switchyard-traffic"], "production");
    let qualifiers: Vec<String> = moto_lambda(&["calls", endpoint, &target])
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["qualifier"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(qualifiers, [candidate.clone(), stable.clone()]);
}

/// `deploy/follow.py` for `function` on `store`: what it did (its JSON), or
/// its error (stderr) when it refused.
fn follow(store: &str, function: &str) -> Result<Value, String> {
    let out = Command::new("python3")
        .args(["deploy/follow.py", function, "--store", store])
        .current_dir(repo_root())
        .env("SWITCHYARD_CLI", common::workspace_bin("switchyard"))
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}")))
    } else {
        Err(stderr)
    }
}

fn queues(prefix: &str) -> Vec<String> {
    let out = aws_ok(&["sqs", "list-queues", "--queue-name-prefix", prefix]);
    if out.trim().is_empty() {
        return Vec::new();
    }
    let v: Value = serde_json::from_str(&out).unwrap();
    v["QueueUrls"]
        .as_array()
        .map(|a| a.iter().map(|u| u.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn parameter(name: &str) -> Option<String> {
    let out = aws_cli(&[
        "ssm",
        "get-parameter",
        "--name",
        name,
        "--query",
        "Parameter.Value",
        "--output",
        "text",
    ]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn the_candidates_own_queue_follows_the_mode_and_reaches_it_as_context() {
    let id = std::process::id();
    let prefix = format!("/sy-pv-{id}");
    let store = format!("ssm:{prefix}");
    let function = format!("pv{id}");
    let (stable_up, candidate_up) = (common::echo_head_upstream(), common::echo_head_upstream());
    let tmp = tempfile::tempdir().unwrap();
    publish_synthetic_header(
        &store,
        &function,
        &json!({
            "mode": "production",
            "versions": {"stable": "1", "candidate": "2"},
            "dispatch": {"type": "http", "urls": {"1": stable_up, "2": candidate_up}},
        }),
        tmp.path(),
    );
    let stack = format!("{function}-candidate-2");
    let url_parameter = format!("{prefix}/infrastructure/{function}/2/QUEUE_URL");
    let reference = json!({"$ssm": url_parameter});
    let live = || common::switchyard_json(&store, &["status", &function])[0].clone();

    // Production mode: no candidate infrastructure.
    let did = follow(&store, &function).unwrap();
    assert_eq!(did["synthetic-candidate"], Value::Null, "{did}");
    assert_eq!(did["deployed"], Value::Null);
    assert!(queues(&stack).is_empty());

    // Synthetic mode: the candidate's queue, its URL where the reference
    // reads it, and the reference in the route.
    common::switchyard_cli(&store, &["mode", &function, "synthetic"]);
    let did = follow(&store, &function).unwrap();
    assert_eq!(did["deployed"]["stack"], stack.as_str(), "{did}");
    let queue = did["deployed"]["outputs"]["QueueUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(queues(&stack).len(), 1, "{did}");
    assert_eq!(parameter(&url_parameter).as_deref(), Some(queue.as_str()));
    assert_eq!(live()["context"]["2"]["QUEUE_URL"], reference, "{}", live());

    // A stale rerun (the same step again): the same queue, nothing deleted.
    let again = follow(&store, &function).unwrap();
    assert_eq!(again["deleted"], json!([]), "{again}");
    assert_eq!(again["deployed"]["outputs"]["QueueUrl"], queue.as_str());

    // The candidate's synthetic requests carry its queue's URL; stable's
    // production requests do not.
    let served = common::serve(&store, &["--poll-interval", "300ms"], &[]);
    common::wait_for_port(
        served.port,
        "switchyard serve",
        std::time::Duration::from_secs(30),
    );
    let seen = common::curl(&[
        &served.url(&format!("/{function}/x")),
        "-H",
        "x-switchyard-synthetic: true",
    ]);
    assert!(
        seen.contains(&format!(
            "x-switchyard-ctx-queue_url: {}",
            queue.to_ascii_lowercase()
        )),
        "the candidate saw: {seen}\n{}",
        served.log()
    );
    let production = common::curl(&[&served.url(&format!("/{function}/x"))]);
    assert!(
        production.contains("x-switchyard-traffic: production")
            && !production.contains("queue_url"),
        "stable saw: {production}"
    );

    // Never deleted while the live route references it: a route written by
    // hand (around the CLI, which would drop the reference) keeps it.
    let route_parameter = format!("{prefix}/functions/{function}");
    let mut by_hand: Value = serde_json::from_str(&parameter(&route_parameter).unwrap()).unwrap();
    by_hand["mode"] = json!("production");
    aws_ok(&[
        "ssm",
        "put-parameter",
        "--name",
        &route_parameter,
        "--type",
        "String",
        "--overwrite",
        "--value",
        &by_hand.to_string(),
    ]);
    let refused = follow(&store, &function).unwrap_err();
    assert!(
        refused.contains(&format!("not deleting {stack}")) && refused.contains("2:QUEUE_URL"),
        "{refused}"
    );
    assert_eq!(queues(&stack).len(), 1, "the referenced queue stays");

    // Production mode through the CLI: the write drops the reference, and
    // the same redeploy removes the queue and its parameter.
    common::switchyard_cli(&store, &["mode", &function, "production"]);
    assert_eq!(live()["context"], json!({}), "{}", live());
    let did = follow(&store, &function).unwrap();
    assert_eq!(did["deleted"], json!([stack]), "{did}");
    assert!(queues(&stack).is_empty(), "the candidate's queue is gone");
    assert_eq!(parameter(&url_parameter), None);
}
