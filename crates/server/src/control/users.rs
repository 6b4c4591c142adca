//! `warren ctl` requests for users, permissions and vhosts, answered with `rabbitmqctl`'s
//! output lines.

use warren_core::password::PasswordHash;
use warren_core::users::{Permissions, parse_tags};
use warren_core::{AmqpError, Broker};

fn no_user(user: &str) -> AmqpError {
    AmqpError::not_found(format!("User \"{user}\" does not exist"))
}

/// Answers a request the policy and limit commands did not.
pub(super) fn execute(broker: &Broker, fields: &[&str]) -> Result<String, AmqpError> {
    match fields {
        ["add_user", u, password] => {
            if broker.has_user(u) {
                return Err(AmqpError::precondition_failed(format!("User \"{u}\" already exists")));
            }
            broker.put_user(u, Some(Some(PasswordHash::new(password))), Some(Vec::new()))?;
            Ok(format!(
                "Adding user \"{u}\" ...\nDone. Don't forget to grant the user permissions to some virtual hosts! See 'rabbitmqctl help set_permissions' to learn more.\n"
            ))
        }
        ["delete_user", u] => {
            broker.delete_user(u).map_err(|_| no_user(u))?;
            Ok(format!("Deleting user \"{u}\" ...\n"))
        }
        ["change_password", u, password] => {
            if !broker.has_user(u) {
                return Err(no_user(u));
            }
            broker.put_user(u, Some(Some(PasswordHash::new(password))), None)?;
            Ok(format!("Changing password for user \"{u}\" ...\n"))
        }
        ["set_user_tags", u, tags @ ..] => {
            if !broker.has_user(u) {
                return Err(no_user(u));
            }
            let tags: Vec<String> = tags.iter().flat_map(|t| parse_tags(t)).collect();
            broker.put_user(u, None, Some(tags.clone()))?;
            Ok(format!("Setting tags for user \"{u}\" to [{}] ...\n", tags.join(", ")))
        }
        ["list_users"] => {
            let mut out = String::from("Listing users ...\nuser\ttags\n");
            for u in broker.user_list() {
                out.push_str(&format!("{}\t[{}]\n", u.name, u.tags.join(", ")));
            }
            Ok(out)
        }
        ["set_permissions", v, u, configure, write, read] => {
            if !broker.has_user(u) {
                return Err(no_user(u));
            }
            if broker.vhost(v).is_none() {
                return Err(AmqpError::not_found(format!("Virtual host {v} does not exist")));
            }
            broker.set_permissions(u, v, Permissions::new(configure, write, read)?)?;
            Ok(format!("Setting permissions for user \"{u}\" in vhost \"{v}\" ...\n"))
        }
        ["clear_permissions", v, u] => {
            if !broker.has_user(u) {
                return Err(no_user(u));
            }
            broker.clear_permissions(u, v)?;
            Ok(format!("Clearing permissions for user \"{u}\" in vhost \"{v}\" ...\n"))
        }
        ["list_permissions", v] => {
            if broker.vhost(v).is_none() {
                return Err(AmqpError::not_found(format!("Virtual host {v} does not exist")));
            }
            let mut out = format!("Listing permissions for vhost \"{v}\" ...\n");
            out.push_str("user\tconfigure\twrite\tread\n");
            for (user, _, p) in broker.permission_list().into_iter().filter(|p| p.1 == *v) {
                let (c, w, r) = p.texts();
                out.push_str(&format!("{user}\t{c}\t{w}\t{r}\n"));
            }
            Ok(out)
        }
        ["list_user_permissions", u] => {
            if !broker.has_user(u) {
                return Err(no_user(u));
            }
            let mut out = format!("Listing permissions for user \"{u}\" ...\n");
            out.push_str("vhost\tconfigure\twrite\tread\n");
            for (_, vhost, p) in broker.permission_list().into_iter().filter(|p| p.0 == *u) {
                let (c, w, r) = p.texts();
                out.push_str(&format!("{vhost}\t{c}\t{w}\t{r}\n"));
            }
            Ok(out)
        }
        ["add_vhost", v] => {
            broker.create_vhost(v)?;
            Ok(format!("Adding vhost \"{v}\" ...\n"))
        }
        ["list_vhosts"] => {
            let mut names: Vec<String> =
                broker.vhost_list().iter().map(|v| v.name.to_string()).collect();
            names.sort();
            Ok(format!("Listing vhosts ...\nname\n{}\n", names.join("\n")))
        }
        _ => {
            Err(AmqpError::command_invalid(format!("unknown control request {:?}", fields.first())))
        }
    }
}
