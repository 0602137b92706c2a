//! What the AWS backends share.

/// An AWS SDK error as its code (empty when the service sent none) and a
/// message for humans: `Code: message`, or the whole error chain when
/// there is no service message (a connection refused, a timeout). Shared
/// by the SSM, S3 and Cloud Map backends (each maps codes to
/// [`StoreError`](crate::StoreError) itself) and the dispatch layer's
/// secret reads.
pub fn sdk_message<E>(e: &aws_sdk_ssm::error::SdkError<E>) -> (String, String)
where
    E: aws_sdk_ssm::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_ssm::error::ProvideErrorMetadata as _;
    let code = e.code().unwrap_or_default().to_owned();
    let message = match e.message() {
        Some(m) => format!("{code}: {m}"),
        None => format!(
            "{}",
            aws_smithy_types::error::display::DisplayErrorContext(e)
        ),
    };
    (code, message)
}

/// An interceptor that drops the host prefix an operation asks for
/// (`data-` for Cloud Map's discovery calls, `sync-` for Step Functions'
/// `StartSyncExecution`), for clients given an endpoint URL: an emulator
/// or a VPC endpoint on a bare address, where `data-127.0.0.1` is no host.
#[derive(Debug)]
pub struct NoHostPrefix;

impl aws_smithy_runtime_api::client::interceptors::Intercept for NoHostPrefix {
    fn name(&self) -> &'static str {
        "NoHostPrefix"
    }

    fn modify_before_retry_loop(
        &self,
        _context: &mut aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        cfg.interceptor_state()
            .unset::<aws_smithy_runtime_api::client::endpoint::EndpointPrefix>();
        Ok(())
    }
}
