//! Which route table each new subnet joins: the one that routes its AZ's
//! private subnets to a NAT gateway (docs/aws-rules.md, "Routes").

use crate::model::RouteTable;
use crate::plan::{Refusal, RefusalCode};

use super::{Planner, refuse};

impl<'a> Planner<'a> {
    /// The table a subnet's traffic uses: its explicit association, else the main table.
    pub(super) fn effective_route_table_of(&self, subnet_id: &str) -> Option<&'a RouteTable> {
        self.explicit_tables.get(subnet_id).copied().or_else(|| self.snapshot.main_route_table())
    }

    /// The route table a managed subnet in `az` should use: that of a
    /// private node subnet there (NAT first), else the main table, explicitly.
    pub(super) fn route_table_for(&mut self, az: &str) -> Result<(String, bool), Refusal> {
        let tables_in_az: Vec<_> = self
            .route_sources
            .iter()
            .filter(|s| s.availability_zone == az)
            .filter_map(|s| self.effective_route_table_of(&s.id))
            .collect();
        let chosen = tables_in_az
            .iter()
            .find(|t| t.routes_through_nat())
            .or_else(|| tables_in_az.iter().find(|t| !t.routes_through_internet_gateway()));
        if let Some(table) = chosen {
            return Ok((table.id.clone(), false));
        }
        match self.snapshot.main_route_table() {
            Some(main) => {
                let note = format!(
                    "{az}: no private node subnet to copy a route table from; using the main table {}",
                    main.id
                );
                if !self.notes.contains(&note) {
                    self.notes.push(note);
                }
                Ok((main.id.clone(), true))
            }
            None => Err(refuse(
                RefusalCode::NoRouteTable,
                format!("{az} has no private node subnet and VPC {} has no main route table", self.snapshot.vpc.id),
            )),
        }
    }
}
