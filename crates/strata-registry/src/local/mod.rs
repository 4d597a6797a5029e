//! Local sources: OCI image layouts (directory or tar) and `docker save`
//! tars; and local destinations: OCI image layouts and `docker save` tars.

mod archive;
mod docker_archive;
mod docker_writer;
mod oci_layout;
mod oci_writer;
mod tar_out;

pub(crate) use docker_archive::DockerArchive;
pub(crate) use docker_writer::DockerArchiveWriter;
pub(crate) use oci_layout::OciLayout;
pub(crate) use oci_writer::OciLayoutWriter;
