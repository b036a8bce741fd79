//! The `volli` command line: `serve` runs a node; the other commands are clients of a running
//! node, talking to its API with the token from its data dir.

mod client;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use multiaddr::Multiaddr;

use crate::config::{Config, LogFormat, Overrides};
use crate::keystore::{self, Passphrase};

/// A personal server for a peer-to-peer, end-to-end encrypted messenger.
#[derive(Parser, Debug)]
#[command(name = "volli", version, about, propagate_version = true)]
struct Cli {
    /// TOML config file (see volli.example.toml).
    #[arg(long, global = true, env = "VOLLI_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory: identity, database, admin token [default: ./volli-data].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Client commands: the node's API URL [default: from <data-dir>/api.url].
    #[arg(long, global = true, env = "VOLLI_API", value_name = "URL")]
    api: Option<String>,
    /// Client commands: the admin token [default: from <data-dir>/admin.token].
    #[arg(
        long,
        global = true,
        env = "VOLLI_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node.
    Serve(ServeArgs),
    /// Show whether the node is running and who it is.
    Status,
    /// Print the node's description (`GET /v1/node`) as JSON.
    Node,
    /// Print a one-time login link to the admin page (valid once, for 10 minutes).
    Admin,
    /// Backups: `volli backup FILE --passphrase-file F` writes an encrypted copy of the
    /// node's data dir to FILE (works while it runs); `volli backup setup|status|now` manage
    /// the backup held by friends' nodes.
    #[command(args_conflicts_with_subcommands = true)]
    Backup {
        #[command(subcommand)]
        command: Option<BackupCommand>,
        /// The backup file to create.
        file: Option<PathBuf>,
        /// A file whose first line is the passphrase (at least 8 characters).
        #[arg(long, value_name = "F")]
        passphrase_file: Option<PathBuf>,
    },
    /// Restore: a backup file into a new data dir (`--data-dir`, which must not exist or be
    /// empty); or, with `--phrase`, a running fresh node from the recovery phrase of a backup
    /// held by friends.
    Restore {
        /// The backup file.
        #[arg(conflicts_with = "phrase")]
        file: Option<PathBuf>,
        /// A file whose first line is the passphrase.
        #[arg(long, value_name = "F", conflicts_with = "phrase")]
        passphrase_file: Option<PathBuf>,
        /// The recovery phrase (`-`: read it from standard input).
        #[arg(long, value_name = "WORDS")]
        phrase: Option<String>,
        /// With `--phrase`: a friend's node to ask first (`/ip4/…/tcp/…/p2p/<peer id>`).
        #[arg(long, value_name = "MULTIADDR", requires = "phrase")]
        bootstrap: Vec<String>,
    },
    /// Seal the node's keys with a passphrase, or unseal them (with the node stopped).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print the effective configuration (defaults, file, environment and flags merged).
    Config(ServeArgs),
    /// Print the OpenAPI document of this version's API.
    Openapi,
    /// List, install and manage plugins.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Create an invite: prints the link and its QR code.
    Invite {
        /// Lifetime in seconds [default: one day].
        #[arg(long)]
        ttl: Option<u64>,
        /// How many people may redeem it [default: 1].
        #[arg(long)]
        uses: Option<u16>,
        /// Print only the link.
        #[arg(long)]
        no_qr: bool,
    },
    /// List contacts, or add and remove them.
    Contacts {
        #[command(subcommand)]
        command: Option<ContactsCommand>,
    },
    /// Show this user's display name and picture, or change them.
    Profile {
        #[command(subcommand)]
        command: Option<ProfileCommand>,
    },
    /// Search the messages of every conversation (or one): each word matches the start of a
    /// word, whatever its case and accents; newest first.
    Search {
        /// The words.
        text: String,
        /// Only the conversation with this contact (user id or name).
        #[arg(long, conflicts_with = "group")]
        with: Option<String>,
        /// Only this group's messages (id or name).
        #[arg(long)]
        group: Option<String>,
        /// How many results at most.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// List the peers this node knows.
    Peers,
    /// Send a message to a contact (by user id or by name).
    Send {
        /// The contact's user id or name.
        to: String,
        /// The text.
        text: String,
    },
    /// Answer a message (by its id), in its conversation.
    Reply {
        /// The message's id.
        id: String,
        /// The text.
        text: String,
    },
    /// React to a message (by its id) with one emoji; `--remove` takes it back.
    React {
        /// The message's id.
        id: String,
        /// The emoji.
        emoji: String,
        /// Take the reaction back.
        #[arg(long)]
        remove: bool,
    },
    /// Edit a message of this user's (by its id): the new text on every member's devices.
    Edit {
        /// The message's id.
        id: String,
        /// The new text.
        text: String,
    },
    /// Delete a message of this user's for everyone (by its id): a tombstone on every
    /// member's devices.
    Unsend {
        /// The message's id.
        id: String,
    },
    /// Show the conversation with a contact (by user id or by name).
    Messages {
        /// The contact's user id or name.
        with: String,
        /// How many of the latest messages.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Add a device to this user: prints a link (with its QR code) and a short code, then
    /// waits for the new device and asks you to approve it. `volli pair join` runs on the new
    /// node.
    Pair {
        #[command(subcommand)]
        command: Option<PairCommand>,
        /// How long the link and code work, in seconds [default: 900].
        #[arg(long)]
        ttl: Option<u64>,
        /// What the new device may do, comma-separated: messages, contacts, settings, admin
        /// [default: messages,contacts,settings].
        #[arg(long)]
        permissions: Option<String>,
        /// Print only the link and the code; do not wait for the new device.
        #[arg(long)]
        no_wait: bool,
    },
    /// List this user's devices, or revoke one.
    Devices {
        #[command(subcommand)]
        command: Option<DevicesCommand>,
    },
    /// Send a file to a contact (by user id or by name), showing its progress.
    SendFile {
        /// The contact's user id or name (or this user's id, for its other devices).
        to: String,
        /// The file.
        path: PathBuf,
        /// Stream the file's bytes to the node instead of naming its path (for a node on
        /// another machine).
        #[arg(long)]
        upload: bool,
        /// Return once the file is offered; do not wait for the transfer.
        #[arg(long)]
        no_wait: bool,
    },
    /// List file transfers, or act on one.
    Transfers {
        #[command(subcommand)]
        command: Option<TransfersCommand>,
    },
    /// List client tokens (phones, browsers, scripts), or add and revoke them.
    Clients {
        #[command(subcommand)]
        command: Option<ClientsCommand>,
    },
    /// List the groups this user is in, or create, change, read and write to one.
    Groups {
        #[command(subcommand)]
        command: Option<GroupsCommand>,
    },
}

#[derive(Subcommand, Debug)]
enum GroupsCommand {
    /// Create a group with contacts (by user id or name); this user is its first admin.
    Create {
        /// Its name.
        name: String,
        /// Its first members, comma-separated.
        #[arg(long, default_value = "")]
        members: String,
    },
    /// Show a group (by id or name): its members, their roles and devices.
    Show {
        /// The group's id or name.
        group: String,
    },
    /// Add a contact to a group (admins).
    Add {
        /// The group's id or name.
        group: String,
        /// The contact's user id or name.
        user: String,
    },
    /// Remove a member from a group (admins).
    Remove {
        /// The group's id or name.
        group: String,
        /// The member's user id (or a contact's name).
        user: String,
    },
    /// Leave a group.
    Leave {
        /// The group's id or name.
        group: String,
    },
    /// Make a member an admin (or `--member` again).
    Promote {
        /// The group's id or name.
        group: String,
        /// The member's user id (or a contact's name).
        user: String,
        /// Make it a member again instead.
        #[arg(long)]
        member: bool,
    },
    /// Rename a group (admins).
    Rename {
        /// The group's id or name.
        group: String,
        /// The new name.
        name: String,
    },
    /// Send a message to a group.
    Send {
        /// The group's id or name.
        group: String,
        /// The text.
        text: String,
    },
    /// Offer a file to every member of a group, showing its progress (until every member
    /// who fetches it from this node has it).
    SendFile {
        /// The group's id or name.
        group: String,
        /// The file.
        path: PathBuf,
        /// Stream the file's bytes to the node instead of naming its path.
        #[arg(long)]
        upload: bool,
        /// Return once the file is offered; do not wait for the transfer.
        #[arg(long)]
        no_wait: bool,
    },
    /// Show a group's messages.
    Messages {
        /// The group's id or name.
        group: String,
        /// How many of the latest messages.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Subcommand, Debug)]
enum ClientsCommand {
    /// Add a client: prints a one-time login link with its QR code, which the client trades
    /// for its token (the token itself never appears in the link).
    Add {
        /// What the client is, e.g. `phone`.
        #[arg(long)]
        name: String,
        /// What it may do, comma-separated: read, messages, files, contacts, admin.
        #[arg(long)]
        scopes: String,
        /// How long the link works, in seconds, 60 to 3600 [default: 600].
        #[arg(long)]
        ttl: Option<u64>,
        /// The address the client reaches the API at [default: the address this command
        /// uses, which is loopback on the node's own machine].
        #[arg(long, value_name = "URL")]
        api_url: Option<String>,
        /// Create the token at once and print it instead of a login link (for a script on
        /// this machine).
        #[arg(long)]
        print_token: bool,
        /// Print only the link.
        #[arg(long)]
        no_qr: bool,
    },
    /// Revoke a client: its token stops working at once.
    Revoke {
        /// The client's id (`volli clients` lists them; base64url, so it may begin
        /// with `-`).
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum TransfersCommand {
    /// Accept an offered file (the download starts; add --wait to follow it).
    Accept {
        /// The transfer id.
        id: String,
        /// Follow the download until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// Decline an offered file.
    Decline {
        /// The transfer id.
        id: String,
    },
    /// Pause a transfer.
    Pause {
        /// The transfer id.
        id: String,
    },
    /// Resume a transfer this side paused.
    Resume {
        /// The transfer id.
        id: String,
    },
    /// Cancel a transfer.
    Cancel {
        /// The transfer id.
        id: String,
    },
    /// Save a received file.
    Save {
        /// The transfer id.
        id: String,
        /// Where to write it: a directory (the file keeps the name its sender gave, or
        /// `name (1).ext` if that is taken), or a file name.
        path: PathBuf,
        /// Replace the file named by PATH if it exists.
        #[arg(long)]
        overwrite: bool,
    },
    /// Forget a finished transfer (a received file's content with it).
    Delete {
        /// The transfer id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum BackupCommand {
    /// Set up the backup held by friends: prints the recovery phrase, once.
    Setup {
        /// Make a new phrase even though one is set up (the old one stops working).
        #[arg(long)]
        rotate: bool,
    },
    /// Where the backup held by friends stands: holders, freshness, how many may vanish.
    Status,
    /// Refresh the backup held by friends now.
    Now,
}

#[derive(Subcommand, Debug)]
enum PairCommand {
    /// Join a user as a new device (run on the new node), with a link or a short code.
    Join {
        /// The `volli://pair/…` link or the short code.
        link_or_code: String,
        /// The name this device is to have [default: its current name].
        #[arg(long)]
        name: Option<String>,
    },
    /// Approve a request to join (after comparing its check code).
    Approve {
        /// The pairing id.
        id: String,
    },
    /// Reject a request to join.
    Reject {
        /// The pairing id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Seal the keys in the data dir (Argon2id + AES-256-GCM): from then on `volli serve`
    /// asks for the passphrase or reads `--passphrase-file`.
    Seal {
        /// A file whose first line is the passphrase (at least 8 characters) [default: ask].
        #[arg(long, value_name = "F")]
        passphrase_file: Option<PathBuf>,
    },
    /// Write the keys back unsealed.
    Unseal {
        /// A file whose first line is the passphrase [default: ask].
        #[arg(long, value_name = "F")]
        passphrase_file: Option<PathBuf>,
    },
    /// Say whether the keys are sealed.
    Status,
}

#[derive(Subcommand, Debug)]
enum DevicesCommand {
    /// Revoke a device: it gets nothing new and contacts learn it is no longer yours.
    Revoke {
        /// Its peer id.
        peer_id: String,
    },
}

#[derive(Subcommand, Debug)]
enum ContactsCommand {
    /// Accept an invite link.
    Add {
        /// The `volli://invite/…` link.
        link: String,
        /// A name for the contact [default: their own].
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove a contact.
    Remove {
        /// Their user id or name.
        user_id: String,
    },
    /// Give a contact a name of your own (only you see it; your devices do too).
    Rename {
        /// Their user id or name.
        who: String,
        /// The new name; leave it out to use their own name again.
        name: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ProfileCommand {
    /// Set the display name contacts see.
    SetName {
        /// 1 to 64 bytes.
        name: String,
    },
    /// Set the picture contacts see: a PNG, JPEG or WebP image of at most 256 KiB.
    SetAvatar {
        /// The image file.
        path: PathBuf,
    },
    /// Remove the picture.
    RemoveAvatar,
}

#[derive(Subcommand, Debug)]
enum PluginsCommand {
    /// List the plugins with their state.
    List,
    /// Install a plugin component (a .wasm file built against the SDK).
    Install {
        /// The component.
        file: PathBuf,
        /// Capabilities to grant, comma-separated (e.g. `kv,http`).
        #[arg(long, default_value = "")]
        grant: String,
        /// Hosts its `http` capability may reach, comma-separated.
        #[arg(long, default_value = "")]
        http_allow: String,
    },
    /// Enable a plugin.
    Enable {
        /// Plugin name.
        name: String,
    },
    /// Disable a plugin.
    Disable {
        /// Plugin name.
        name: String,
    },
    /// Remove an installed plugin.
    Remove {
        /// Plugin name.
        name: String,
    },
    /// Replace a plugin's configuration (a JSON object) and restart it.
    Config {
        /// Plugin name.
        name: String,
        /// The configuration, e.g. '{"peers": []}'.
        json: String,
    },
}

#[derive(Args, Debug, Clone)]
struct ServeArgs {
    /// API listen address [default: 127.0.0.1:8470].
    #[arg(long, value_name = "HOST:PORT")]
    api_listen: Option<std::net::SocketAddr>,
    /// libp2p listen address; repeat for several [default: TCP and QUIC on port 8471].
    #[arg(long, value_name = "MULTIADDR")]
    p2p_listen: Vec<Multiaddr>,
    /// Kademlia bootstrap peer; repeat for several [default: none].
    #[arg(long, value_name = "MULTIADDR")]
    bootstrap: Vec<Multiaddr>,
    /// This device's name [default: the host name].
    #[arg(long, value_name = "NAME")]
    device_name: Option<String>,
    /// Log format.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// A file whose first line is the passphrase of sealed keys (`volli keys seal`); given
    /// for a new data dir, the keys are created sealed [default: ask, when in a terminal].
    #[arg(long, env = "VOLLI_PASSPHRASE_FILE", value_name = "F")]
    passphrase_file: Option<PathBuf>,
}

/// Entry point of the `volli` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Serve(args) => {
            let loaded = load_config(&cli, Some(args))?;
            crate::logging::init(&loaded.config.log);
            for warning in &loaded.warnings {
                tracing::warn!("{warning}");
            }
            let data_dir = &loaded.config.data_dir;
            let passphrase = match &args.passphrase_file {
                Some(file) => Some(Passphrase::from_file(file)?),
                None if keystore::is_sealed(data_dir) && std::io::stdin().is_terminal() => {
                    Some(ask(&format!(
                        "Passphrase for the keys in {}: ",
                        data_dir.display()
                    ))?)
                }
                None => None,
            };
            crate::node::run(loaded.config, passphrase, shutdown_signal()).await
        }
        Command::Keys(command) => keys_command(&cli, command),
        Command::Config(args) => {
            print!("{}", load_config(&cli, Some(args))?.config.to_toml());
            Ok(())
        }
        Command::Openapi => {
            print!("{}", crate::api::openapi_json());
            Ok(())
        }
        Command::Status => client::status(&connect(&cli)?).await,
        Command::Node => client::node(&connect(&cli)?).await,
        Command::Admin => client::admin(&connect(&cli)?).await,
        Command::Backup {
            command: Some(command),
            ..
        } => {
            let c = connect(&cli)?;
            match command {
                BackupCommand::Setup { rotate } => client::backup_setup(&c, *rotate).await,
                BackupCommand::Status => client::backup_status(&c).await,
                BackupCommand::Now => client::backup_now(&c).await,
            }
        }
        Command::Backup {
            command: None,
            file,
            passphrase_file,
        } => {
            let (Some(file), Some(passphrase_file)) = (file, passphrase_file) else {
                anyhow::bail!(
                    "give a FILE and --passphrase-file F, or one of `volli backup setup|status|now`"
                );
            };
            let data_dir = load_config(&cli, None)?.config.data_dir;
            let passphrase = crate::backup::read_passphrase(passphrase_file)?;
            let size = crate::backup::backup(&data_dir, file, &passphrase).await?;
            eprintln!(
                "backed up {} ({:.1} MB) to {}",
                data_dir.display(),
                size as f64 / 1e6,
                file.display()
            );
            Ok(())
        }
        Command::Restore {
            phrase: Some(phrase),
            bootstrap,
            ..
        } => {
            let phrase = if phrase == "-" {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                zeroize::Zeroizing::new(line)
            } else {
                zeroize::Zeroizing::new(phrase.clone())
            };
            // The phrase is checked before anything else, so a typo is said at once.
            if let Err(e) = volli_core::backup::RecoveryPhrase::parse(&phrase) {
                anyhow::bail!("not a recovery phrase: {e}");
            }
            let client = connect(&cli).map_err(|e| {
                anyhow::anyhow!(
                    "{e}\nrestoring from a phrase needs a fresh node running on this data dir: \
                     start one with `volli serve --data-dir DIR`, then run this again"
                )
            })?;
            client::restore_phrase(&client, &phrase, bootstrap).await
        }
        Command::Restore {
            file,
            passphrase_file,
            ..
        } => {
            let (Some(file), Some(passphrase_file)) = (file, passphrase_file) else {
                anyhow::bail!("give a FILE and --passphrase-file F, or --phrase WORDS");
            };
            let data_dir = load_config(&cli, None)?.config.data_dir;
            let passphrase = crate::backup::read_passphrase(passphrase_file)?;
            let files = crate::backup::restore(file, &data_dir, &passphrase)?;
            eprintln!(
                "restored {files} files into {}; start it with `volli serve --data-dir {}` \
                 (and do not run the original node at the same time)",
                data_dir.display(),
                data_dir.display()
            );
            Ok(())
        }
        Command::Plugins(command) => plugins_command(&connect(&cli)?, command).await,
        Command::Invite { ttl, uses, no_qr } => {
            client::invite(&connect(&cli)?, *ttl, *uses, !*no_qr).await
        }
        Command::Contacts { command } => {
            let c = connect(&cli)?;
            match command {
                None => client::contacts(&c).await,
                Some(ContactsCommand::Add { link, name }) => {
                    client::add_contact(&c, link, name.as_deref()).await
                }
                Some(ContactsCommand::Rename { who, name }) => {
                    client::rename_contact(&c, who, name.as_deref()).await
                }
                Some(ContactsCommand::Remove { user_id }) => {
                    let user_id = client::contact_id(&c, user_id).await?;
                    let path = format!("/v1/contacts/{}", client::encode(&user_id));
                    c.send(reqwest::Method::DELETE, &path, client::Body::None)
                        .await?;
                    println!("removed {user_id}");
                    Ok(())
                }
            }
        }
        Command::Profile { command } => {
            let c = connect(&cli)?;
            match command {
                None => client::profile(&c).await,
                Some(ProfileCommand::SetName { name }) => client::set_name(&c, name).await,
                Some(ProfileCommand::SetAvatar { path }) => client::set_avatar(&c, path).await,
                Some(ProfileCommand::RemoveAvatar) => {
                    c.send(
                        reqwest::Method::DELETE,
                        "/v1/profile/avatar",
                        client::Body::None,
                    )
                    .await?;
                    client::profile(&c).await
                }
            }
        }
        Command::Search {
            text,
            with,
            group,
            limit,
        } => {
            client::search(
                &connect(&cli)?,
                text,
                with.as_deref(),
                group.as_deref(),
                *limit,
            )
            .await
        }
        Command::Peers => client::peers(&connect(&cli)?).await,
        Command::Send { to, text } => client::send(&connect(&cli)?, to, text).await,
        Command::Reply { id, text } => client::reply(&connect(&cli)?, id, text).await,
        Command::React { id, emoji, remove } => {
            client::react(&connect(&cli)?, id, emoji, *remove).await
        }
        Command::Edit { id, text } => client::edit(&connect(&cli)?, id, text).await,
        Command::Unsend { id } => client::unsend(&connect(&cli)?, id).await,
        Command::Messages { with, limit } => client::messages(&connect(&cli)?, with, *limit).await,
        Command::Pair {
            command,
            ttl,
            permissions,
            no_wait,
        } => {
            let c = connect(&cli)?;
            match command {
                None => client::pair(&c, *ttl, permissions.as_deref(), !*no_wait).await,
                Some(PairCommand::Join { link_or_code, name }) => {
                    client::pair_join(&c, link_or_code, name.as_deref()).await
                }
                Some(PairCommand::Approve { id }) => client::pair_decide(&c, id, true).await,
                Some(PairCommand::Reject { id }) => client::pair_decide(&c, id, false).await,
            }
        }
        Command::SendFile {
            to,
            path,
            upload,
            no_wait,
        } => client::send_file(&connect(&cli)?, to, path, *upload, !*no_wait).await,
        Command::Transfers { command } => {
            let c = connect(&cli)?;
            match command {
                None => client::transfers(&c).await,
                Some(TransfersCommand::Save {
                    id,
                    path,
                    overwrite,
                }) => client::save(&c, id, path, *overwrite).await,
                Some(TransfersCommand::Delete { id }) => {
                    let path = format!("/v1/transfers/{}", client::encode(id));
                    c.send(reqwest::Method::DELETE, &path, client::Body::None)
                        .await?;
                    println!("deleted {id}");
                    Ok(())
                }
                Some(TransfersCommand::Accept { id, wait }) => {
                    client::transfer_action(&c, id, "accept").await?;
                    if *wait {
                        client::follow(&c, id).await?;
                    }
                    Ok(())
                }
                Some(TransfersCommand::Decline { id }) => {
                    client::transfer_action(&c, id, "decline").await
                }
                Some(TransfersCommand::Pause { id }) => {
                    client::transfer_action(&c, id, "pause").await
                }
                Some(TransfersCommand::Resume { id }) => {
                    client::transfer_action(&c, id, "resume").await
                }
                Some(TransfersCommand::Cancel { id }) => {
                    client::transfer_action(&c, id, "cancel").await
                }
            }
        }
        Command::Groups { command } => {
            let c = connect(&cli)?;
            match command {
                None => client::groups(&c).await,
                Some(GroupsCommand::Create { name, members }) => {
                    let members: Vec<&str> = members
                        .split(',')
                        .map(str::trim)
                        .filter(|m| !m.is_empty())
                        .collect();
                    client::group_create(&c, name, &members).await
                }
                Some(GroupsCommand::Show { group }) => client::group_show(&c, group).await,
                Some(GroupsCommand::Add { group, user }) => {
                    client::group_add(&c, group, user).await
                }
                Some(GroupsCommand::Remove { group, user }) => {
                    client::group_remove(&c, group, Some(user)).await
                }
                Some(GroupsCommand::Leave { group }) => client::group_remove(&c, group, None).await,
                Some(GroupsCommand::Promote {
                    group,
                    user,
                    member,
                }) => {
                    client::group_role(&c, group, user, if *member { "member" } else { "admin" })
                        .await
                }
                Some(GroupsCommand::Rename { group, name }) => {
                    client::group_rename(&c, group, name).await
                }
                Some(GroupsCommand::Send { group, text }) => {
                    client::group_send(&c, group, text).await
                }
                Some(GroupsCommand::SendFile {
                    group,
                    path,
                    upload,
                    no_wait,
                }) => client::group_send_file(&c, group, path, *upload, !*no_wait).await,
                Some(GroupsCommand::Messages { group, limit }) => {
                    client::group_messages(&c, group, *limit).await
                }
            }
        }
        Command::Clients { command } => {
            let c = connect(&cli)?;
            match command {
                None => client::clients(&c).await,
                Some(ClientsCommand::Add {
                    name,
                    scopes,
                    ttl,
                    api_url,
                    print_token,
                    no_qr,
                }) => {
                    let scopes: Vec<&str> = scopes.split(',').map(str::trim).collect();
                    if *print_token {
                        client::create_client(&c, name, &scopes).await
                    } else {
                        client::offer_client_login(
                            &c,
                            name,
                            &scopes,
                            *ttl,
                            api_url.as_deref(),
                            !no_qr,
                        )
                        .await
                    }
                }
                Some(ClientsCommand::Revoke { id }) => {
                    let path = format!("/v1/clients/{}", client::encode(id));
                    c.send(reqwest::Method::DELETE, &path, client::Body::None)
                        .await?;
                    println!("revoked {id}");
                    Ok(())
                }
            }
        }
        Command::Devices { command } => {
            let c = connect(&cli)?;
            match command {
                None => client::devices(&c).await,
                Some(DevicesCommand::Revoke { peer_id }) => {
                    let path = format!("/v1/devices/{}", client::encode(peer_id));
                    c.send(reqwest::Method::DELETE, &path, client::Body::None)
                        .await?;
                    println!("revoked {peer_id}");
                    Ok(())
                }
            }
        }
    }
}

async fn plugins_command(client: &client::Client, command: &PluginsCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let show = |v: serde_json::Value| client::print_plugin(&v);
    match command {
        PluginsCommand::List => {
            let list: serde_json::Value = client.get("/v1/plugins").await?;
            for p in list["plugins"].as_array().into_iter().flatten() {
                show(p.clone());
            }
        }
        PluginsCommand::Install {
            file,
            grant,
            http_allow,
        } => {
            let wasm = std::fs::read(file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let path = format!(
                "/v1/plugins?grant={}&http_allow={}",
                client::encode(grant),
                client::encode(http_allow)
            );
            show(
                client
                    .send(Method::POST, &path, client::Body::Wasm(wasm))
                    .await?,
            );
        }
        PluginsCommand::Enable { name } => {
            show(
                client
                    .send(
                        Method::POST,
                        &format!("/v1/plugins/{}/enable", client::encode(name)),
                        client::Body::None,
                    )
                    .await?,
            );
        }
        PluginsCommand::Disable { name } => {
            show(
                client
                    .send(
                        Method::POST,
                        &format!("/v1/plugins/{}/disable", client::encode(name)),
                        client::Body::None,
                    )
                    .await?,
            );
        }
        PluginsCommand::Remove { name } => {
            client
                .send(
                    Method::DELETE,
                    &format!("/v1/plugins/{}", client::encode(name)),
                    client::Body::None,
                )
                .await?;
            println!("removed {name}");
        }
        PluginsCommand::Config { name, json } => {
            let config: serde_json::Value = serde_json::from_str(json)
                .map_err(|e| anyhow::anyhow!("the configuration is not JSON: {e}"))?;
            let body = client::Body::Json(serde_json::json!({ "config": config }));
            show(
                client
                    .send(
                        Method::PUT,
                        &format!("/v1/plugins/{}/config", client::encode(name)),
                        body,
                    )
                    .await?,
            );
        }
    }
    Ok(())
}

fn load_config(cli: &Cli, serve: Option<&ServeArgs>) -> anyhow::Result<crate::config::Loaded> {
    let mut flags = Overrides {
        data_dir: cli.data_dir.clone(),
        ..Overrides::default()
    };
    if let Some(args) = serve {
        flags.api_listen = args.api_listen;
        flags.p2p_listen = args.p2p_listen.clone();
        flags.bootstrap = args.bootstrap.clone();
        flags.device_name = args.device_name.clone();
        flags.log_format = args.log_format;
    }
    Ok(Config::load(
        cli.config.as_deref(),
        std::env::vars(),
        &flags,
    )?)
}

fn keys_command(cli: &Cli, command: &KeysCommand) -> anyhow::Result<()> {
    let data_dir = load_config(cli, None)?.config.data_dir;
    let passphrase = |file: &Option<PathBuf>, confirm: bool| -> anyhow::Result<Passphrase> {
        if let Some(file) = file {
            return Passphrase::from_file(file);
        }
        if !std::io::stdin().is_terminal() {
            anyhow::bail!("not in a terminal: pass the passphrase with --passphrase-file FILE");
        }
        let first = ask("Passphrase: ")?;
        if confirm && ask("The same passphrase again: ")?.as_str() != first.as_str() {
            anyhow::bail!("the two passphrases differ; nothing was changed");
        }
        Ok(first)
    };
    if !keystore::has_identity(&data_dir) {
        anyhow::bail!(
            "{} holds no node keys; pass the node's --data-dir",
            data_dir.display()
        );
    }
    match command {
        KeysCommand::Status => {
            if keystore::is_sealed(&data_dir) {
                println!("sealed: `volli serve` needs the passphrase");
            } else {
                println!("not sealed: seal the keys with `volli keys seal`");
            }
            return Ok(());
        }
        KeysCommand::Seal { passphrase_file } => {
            // The keys change on disk: only with the node stopped.
            let _lock = crate::node::lock_data_dir(&data_dir)?;
            if keystore::is_sealed(&data_dir) {
                anyhow::bail!("the keys are already sealed");
            }
            let passphrase = passphrase(passphrase_file, true)?;
            let n = keystore::seal(&data_dir, &passphrase)?;
            eprintln!(
                "sealed {n} key files in {}; `volli serve` now needs the passphrase \
                 (--passphrase-file, or it asks in a terminal). Without it the keys are lost: \
                 keep it safe.",
                data_dir.display()
            );
        }
        KeysCommand::Unseal { passphrase_file } => {
            let _lock = crate::node::lock_data_dir(&data_dir)?;
            if !keystore::is_sealed(&data_dir) {
                anyhow::bail!("the keys are not sealed");
            }
            let passphrase = passphrase(passphrase_file, false)?;
            let n = keystore::unseal(&data_dir, &passphrase)?;
            eprintln!("unsealed {n} key files in {}", data_dir.display());
        }
    }
    Ok(())
}

/// Asks for a passphrase on the terminal, without echo.
fn ask(prompt: &str) -> anyhow::Result<Passphrase> {
    let text = rpassword::prompt_password(prompt).context("cannot read the passphrase")?;
    if text.is_empty() {
        anyhow::bail!("no passphrase given");
    }
    Ok(Passphrase::new(text))
}

fn connect(cli: &Cli) -> anyhow::Result<client::Client> {
    let config = load_config(cli, None)?.config;
    client::Client::resolve(&config, cli.api.clone(), cli.token.clone())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
