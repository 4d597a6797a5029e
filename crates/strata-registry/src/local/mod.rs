//! Local sources: OCI image layouts (directory or tar) and `docker save`
//! tars; and local destinations: OCI image layouts.

mod archive;
mod docker_archive;
mod oci_layout;
mod oci_writer;

pub(crate) use docker_archive::DockerArchive;
pub(crate) use oci_layout::OciLayout;
pub(crate) use oci_writer::OciLayoutWriter;
