//! What the AWS backends share.

/// An AWS SDK error as its code (empty when the service sent none) and a
/// message for humans: `Code: message`, or the whole error chain when
/// there is no service message (a connection refused, a timeout). Shared
/// by the SSM and S3 backends; each maps codes to
/// [`StoreError`](crate::StoreError) itself.
pub(crate) fn sdk_message<E>(e: &aws_sdk_ssm::error::SdkError<E>) -> (String, String)
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
