//! Local sources: OCI image layouts (directory or tar) and `docker save` tars.

mod archive;
mod docker_archive;
mod oci_layout;

pub(crate) use docker_archive::DockerArchive;
pub(crate) use oci_layout::OciLayout;
