# A job that uses the volume of volume.hcl: Nomad schedules it on the node
# that holds the volume (its topology) and carve stages and publishes it there.
job "db" {
  group "db" {
    volume "data" {
      type            = "csi"
      source          = "db-data"
      access_mode     = "single-node-writer"
      attachment_mode = "file-system"
    }

    task "postgres" {
      driver = "docker"
      config {
        image = "postgres:17"
      }
      volume_mount {
        volume      = "data"
        destination = "/var/lib/postgresql/data"
      }
      env {
        POSTGRES_PASSWORD = "example"
      }
    }
  }
}
