//! How a remote backend learns an image's digest and that its hosts can have it.

use brizo_backend_core::BackendError;
use serde::{Deserialize, Serialize};

use crate::Image;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ImageSource {
    /// The job hosts use the images of the Docker engine on this host (moto runs Batch jobs
    /// on the local engine; so do single-host clusters): it is asked for the image's id, and
    /// the job runs that id, so the receipt names exactly what ran.
    Docker,
    /// Images must be referenced by digest (`name@sha256:...`), which the hosts pull; nothing
    /// is looked up here.
    #[default]
    Pinned,
}

/// What to run for `image`, and its digest.
pub async fn resolve(image: &str, source: &ImageSource) -> Result<Image, BackendError> {
    if let Some((_, digest)) = image.split_once('@') {
        return Ok(Image {
            run: image.to_string(),
            digest: digest.to_string(),
        });
    }
    if *source == ImageSource::Pinned {
        return Err(BackendError::invalid_spec(format!(
            "image {image} is not pinned: with `images = \"pinned\"` reference images by digest (name@sha256:...)"
        )));
    }
    // Connected per call: the service starts, and serves, while the engine is down.
    let docker = bollard::Docker::connect_with_local_defaults().map_err(|e| {
        BackendError::unavailable("the local Docker engine (images = \"docker\")").because(e)
    })?;
    match docker.inspect_image(image).await {
        // A local image runs by its id.
        Ok(found) => {
            let id = found.id.unwrap_or_default();
            Ok(Image {
                run: id.clone(),
                digest: id,
            })
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Err(BackendError::image_not_found(image)),
        Err(e) => Err(BackendError::unavailable(format!(
            "asking the local engine about image {image}"
        ))
        .because(e)),
    }
}
